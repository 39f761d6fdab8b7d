// tests/perfloc/death.hpp — death tests for Boost.Test: run a statement in a forked child and check that
// the child dies (abort, or a sanitizer's report) printing a given message.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace perfloc_test {

struct death {
  bool died = false;  ///< killed by a signal, or exited with a non-zero status
  std::string output;  ///< what the child wrote to stderr
};

/// Runs `body` in a child process with stderr captured. The child exits 0 if `body` returns.
template <class Body>
death run_in_child(Body body) {
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) std::abort();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Boost.Test's execution monitor catches these signals to report them; the child must die of them.
    for (int signal : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) std::signal(signal, SIG_DFL);
    ::dup2(pipe_fds[1], 2);
    ::close(pipe_fds[0]);
    body();
    std::fflush(nullptr);
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  death result;
  char buffer[4096];
  for (ssize_t n; (n = ::read(pipe_fds[0], buffer, sizeof buffer)) > 0;) result.output.append(buffer, n);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  result.died = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
  return result;
}

}  // namespace perfloc_test
