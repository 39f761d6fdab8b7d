// examples/server.cpp — the demo: an async line-protocol server on loopback, with an arena per connection
// and per request, beside the same server on the global allocator.
//
// Protocol: the client sends "GET <n>\n"; the server answers with one line listing n items. The perfloc
// server spawns each connection with perfloc::co_spawn (the connection's chunk holds its read buffer and
// its coroutine frame), opens a labelled chunk per request for the work of building the answer, and gives
// Asio's operation memory the connection's chunk with perfloc::use_chunk. The global server is the same
// code with std::string, asio::co_spawn and use_awaitable.
//
// Each server runs in its own process (so that peak RSS and operator new counts are its own), driven by
// client coroutines in the same process over 127.0.0.1, for a bounded number of requests. The perfloc
// run prints a histogram of bytes per request (from the top chunk's release hook) and writes a picture
// of the top chunk mid-load.
//
//   perfloc-demo [--connections N] [--requests N] [--svg PATH] [--json]
//
// --json adds one JSON line per server at the end, for bench/run.py.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory_resource>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

import perfloc;

namespace asio = boost::asio;
using asio::ip::tcp;

// ---- Counting global operator new (ThreadSanitizer's runtime defines operator new itself) ---------------

#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define PERFLOC_DEMO_NO_NEW_COUNT 1
#endif
#endif

namespace {
std::atomic<std::uint64_t> global_news{0};
}

#ifndef PERFLOC_DEMO_NO_NEW_COUNT
void* operator new(std::size_t n) {
  global_news.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, std::align_val_t alignment) {  // std::pmr::new_delete_resource() uses this one
  global_news.fetch_add(1, std::memory_order_relaxed);
  const auto a = static_cast<std::size_t>(alignment);
  if (void* p = std::aligned_alloc(a, (n + a - 1) / a * a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t alignment) { return ::operator new(n, alignment); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#endif

namespace {

struct settings {
  int connections = 16;
  int requests = 2000;  ///< per connection
  const char* svg = "top-chunk.svg";
  bool json = false;
};

/// What one server run measured; passed from the child process to the parent.
struct results {
  char name[16];
  std::uint64_t requests;
  double seconds;
  double news_per_request;
  double chunk_bytes_per_request;
  std::uint64_t live_chunks_at_end;
  long peak_rss_kib;
  double p50_us, p99_us;  ///< request round trips seen by the clients, after warm-up
};

long peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// ---- The work of one request, on either allocator ----------------------------------------------------

/// Builds the answer to "GET <n>": n items, each formatted, joined. Everything it allocates comes from
/// `memory` (a request chunk, or the global heap through new_delete_resource).
template <class String>
String answer(std::string_view request, std::pmr::memory_resource* memory) {
  const int n = std::clamp(std::atoi(request.data() + std::min<std::size_t>(4, request.size())), 1, 64);
  std::pmr::vector<std::pmr::string> items{memory};
  items.reserve(static_cast<std::size_t>(n));
  char text[48];
  for (int i = 0; i < n; ++i) {
    const int length = std::snprintf(text, sizeof text, "item-%d:%d", i, i * i);
    items.emplace_back(text, static_cast<std::size_t>(length));
  }
  String line{typename String::allocator_type(memory)};
  for (const auto& item : items) (line += item) += ' ';
  line += '\n';
  return line;
}

// ---- The perfloc server ---------------------------------------------------------------------------------

struct perfloc_server {
  perfloc::top_chunk& top;
  std::uint64_t requests = 0;
  std::uint64_t request_bytes = 0;  ///< peak in-use bytes of every request chunk, summed (release hook)
  std::uint64_t svg_at = 0;
  const char* svg = nullptr;

  /// A connection: its frame is in its own chunk (first parameter), and so is its read buffer.
  asio::awaitable<void> session(perfloc::process_chunk& connection, tcp::socket socket) {
    std::pmr::string buffer{connection.resource()};
    for (;;) {
      auto [error, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n',
                                                        asio::as_tuple(perfloc::use_chunk));
      if (error) co_return;
      {
        perfloc::process_chunk request{top, "request"};
        const std::pmr::string line = answer<std::pmr::string>({buffer.data(), n}, request.resource());
        co_await asio::async_write(socket, asio::buffer(line), perfloc::use_chunk);
        if (++requests == svg_at) {  // mid-load: every connection's chunk and this request's are live
          perfloc::write_svg(top, svg);
          std::printf("  wrote %s mid-load (%llu requests served so far)\n", svg,
                      static_cast<unsigned long long>(requests));
        }
      }
      buffer.erase(0, n);
    }
  }

  asio::awaitable<void> listen(tcp::acceptor& acceptor) {
    for (;;) {
      auto [error, socket] = co_await acceptor.async_accept(asio::as_tuple(perfloc::use_chunk));
      if (error) co_return;
      perfloc::co_spawn(
          top, "connection", acceptor.get_executor(),
          [this, s = std::move(socket)](perfloc::process_chunk& connection) mutable {
            return session(connection, std::move(s));
          },
          asio::detached);
    }
  }
};

// ---- The same server on the global allocator -------------------------------------------------------------

struct global_server {
  std::uint64_t requests = 0;

  asio::awaitable<void> session(tcp::socket socket) {
    std::string buffer;
    for (;;) {
      auto [error, n] = co_await asio::async_read_until(socket, asio::dynamic_buffer(buffer), '\n',
                                                        asio::as_tuple(asio::use_awaitable));
      if (error) co_return;
      const std::pmr::string line = answer<std::pmr::string>({buffer.data(), n}, std::pmr::new_delete_resource());
      co_await asio::async_write(socket, asio::buffer(line), asio::use_awaitable);
      ++requests;
      buffer.erase(0, n);
    }
  }

  asio::awaitable<void> listen(tcp::acceptor& acceptor) {
    for (;;) {
      auto [error, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (error) co_return;
      asio::co_spawn(acceptor.get_executor(), session(std::move(socket)), asio::detached);
    }
  }
};

// ---- The load: client coroutines on loopback ----------------------------------------------------------------

asio::awaitable<void> client(tcp::endpoint server, int requests, int& done, std::uint64_t& news_before,
                             int warmup, std::vector<float>& round_trips_us) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(server, asio::use_awaitable);
  std::string reply;
  char request[32];
  for (int i = 0; i < requests; ++i) {
    if (i == warmup) news_before = std::max(news_before, global_news.load());
    const auto sent = std::chrono::steady_clock::now();
    const int length = std::snprintf(request, sizeof request, "GET %d\n", 1 + (i * 7) % 48);
    co_await asio::async_write(socket, asio::buffer(request, static_cast<std::size_t>(length)), asio::use_awaitable);
    const std::size_t n = co_await asio::async_read_until(socket, asio::dynamic_buffer(reply), '\n', asio::use_awaitable);
    reply.erase(0, n);
    if (i >= warmup)  // reserved up front: no allocation in the measured loop
      round_trips_us.push_back(std::chrono::duration<float, std::micro>(std::chrono::steady_clock::now() - sent).count());
  }
  ++done;
}

template <class Server>
results run(const char* name, Server& server, const settings& s, std::uint64_t& served) {
  asio::io_context io(1);
  tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const tcp::endpoint endpoint = acceptor.local_endpoint();
  asio::co_spawn(io, server.listen(acceptor), asio::detached);
  int done = 0;
  std::uint64_t news_before = 0;
  const int warmup = std::min(100, s.requests / 2);
  std::vector<float> round_trips_us;
  round_trips_us.reserve(static_cast<std::size_t>(s.connections) * s.requests);
  for (int c = 0; c < s.connections; ++c)
    asio::co_spawn(io, client(endpoint, s.requests, done, news_before, warmup, round_trips_us), asio::detached);
  const auto start = std::chrono::steady_clock::now();
  while (done < s.connections && io.run_one()) {
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::uint64_t news = global_news.load() - news_before;
  acceptor.close();
  io.stop();
  results r{};
  std::snprintf(r.name, sizeof r.name, "%s", name);
  r.requests = served;
  r.seconds = seconds;
  // The clients' own allocations are counted too, alike in both runs.
  r.news_per_request = static_cast<double>(news) / (static_cast<double>(s.connections) * (s.requests - warmup));
  r.peak_rss_kib = peak_rss_kib();
  std::sort(round_trips_us.begin(), round_trips_us.end());
  if (!round_trips_us.empty()) {
    r.p50_us = round_trips_us[round_trips_us.size() / 2];
    r.p99_us = round_trips_us[round_trips_us.size() * 99 / 100];
  }
  return r;
}

results run_perfloc(const settings& s) {
  std::map<std::size_t, unsigned> histogram;  // peak bytes per request, by power of two
  perfloc_server* server_ptr = nullptr;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& c) {
    if (c.label != "request") return;
    server_ptr->request_bytes += c.peak_in_use_bytes;
    ++histogram[std::bit_ceil(std::max<std::size_t>(c.peak_in_use_bytes, 1))];
  }}};
  perfloc_server server{top};
  server_ptr = &server;
  server.svg = s.svg;
  server.svg_at = static_cast<std::uint64_t>(s.connections) * s.requests / 2;
  results r = run("perfloc", server, s, server.requests);
  r.chunk_bytes_per_request = static_cast<double>(server.request_bytes) / static_cast<double>(server.requests);
  std::printf("  bytes per request from its chunk (peak, each # is 2%% of requests):\n");
  for (const auto& [bucket, count] : histogram)
    std::printf("    <= %6zu B %8u %s\n", bucket, count,
                std::string(count * 50 / server.requests + 1, '#').c_str());
  r.live_chunks_at_end = top.stats().live_chunks;  // the io_context is gone: every chunk was released
  return r;
}

/// Runs one server in a child process and brings back its results through a pipe.
results in_child(results (*run_one)(const settings&), const settings& s) {
  int fds[2];
  if (pipe(fds) != 0) std::abort();
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    const results r = run_one(s);
    if (write(fds[1], &r, sizeof r) != sizeof r) _exit(1);
    std::fflush(stdout);
    _exit(0);
  }
  close(fds[1]);
  results r{};
  const bool got = read(fds[0], &r, sizeof r) == sizeof r;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "perfloc-demo: a server run failed\n");
    std::exit(1);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    if (option == "--json") s.json = true;
    else if (option == "--connections" && value) s.connections = std::max(1, std::atoi(argv[++i]));
    else if (option == "--requests" && value) s.requests = std::max(2, std::atoi(argv[++i]));
    else if (option == "--svg" && value) s.svg = argv[++i];
    else {
      std::fprintf(stderr, "usage: perfloc-demo [--connections N] [--requests N] [--svg PATH] [--json]\n");
      return 2;
    }
  }
  std::printf("perfloc demo: a line-protocol server on 127.0.0.1, %d connections x %d requests, "
              "each server in its own process\n\n",
              s.connections, s.requests);

  std::printf("perfloc server (a chunk per connection and per request):\n");
  results with_perfloc = in_child(run_perfloc, s);
  std::printf("global-allocator server:\n");
  results global = in_child(
      [](const settings& s) {
        global_server server;
        return run("global", server, s, server.requests);
      },
      s);

  std::printf("\n%-8s %9s %11s %8s %8s %13s %15s %11s %12s\n", "server", "requests", "requests/s", "p50 us",
              "p99 us", "new/request", "chunk B/request", "live at end", "peak RSS");
  for (const results& r : {with_perfloc, global})
    std::printf("%-8s %9llu %11.0f %8.1f %8.1f %13.2f %15.0f %11llu %8ld KiB\n", r.name,
                static_cast<unsigned long long>(r.requests), r.requests / r.seconds, r.p50_us, r.p99_us,
                r.news_per_request, r.chunk_bytes_per_request, static_cast<unsigned long long>(r.live_chunks_at_end),
                r.peak_rss_kib);
  if (s.json)
    for (const results& r : {with_perfloc, global})
      std::printf("{\"server\": \"%s\", \"requests\": %llu, \"requests_per_s\": %.1f, \"p50_us\": %.2f, "
                  "\"p99_us\": %.2f, \"news_per_request\": %.4f, \"chunk_bytes_per_request\": %.1f, "
                  "\"live_chunks_at_end\": %llu, \"peak_rss_kib\": %ld}\n",
                  r.name, static_cast<unsigned long long>(r.requests), r.requests / r.seconds, r.p50_us, r.p99_us,
                  r.news_per_request, r.chunk_bytes_per_request,
                  static_cast<unsigned long long>(r.live_chunks_at_end), r.peak_rss_kib);
#ifdef PERFLOC_DEMO_NO_NEW_COUNT
  std::printf("(operator new is not counted in sanitizer builds)\n");
#endif
  std::printf("\nnew / request counts every global operator new in the process after warm-up, the load's "
              "clients included (alike in both).\n");
  const std::uint64_t expected = static_cast<std::uint64_t>(s.connections) * s.requests;
  return with_perfloc.requests == expected && global.requests == expected ? 0 : 1;
}
