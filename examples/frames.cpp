// examples/frames.cpp — coroutine frames out of the global heap, into a chunk.
//
// 1. An asio::awaitable coroutine whose first parameter is a perfloc::process_chunk& has its frame
//    allocated in that chunk (perfloc.asio specialises std::coroutine_traits for it).
// 2. Any other coroutine type gets the same by deriving its promise from perfloc::chunk_frame_allocation:
//    here, a minimal generator.
#include <coroutine>
#include <cstdio>
#include <exception>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

import perfloc;

namespace asio = boost::asio;

// ---- 1. asio::awaitable frames in a chunk ---------------------------------------------------------------

asio::awaitable<long> sum_of_squares(perfloc::process_chunk& chunk, int n) {
  long sum = 0;
  for (int i = 1; i <= n; ++i) sum += static_cast<long>(i) * i;
  co_return sum;
}

// ---- 2. a generator whose frames go to the chunk they are given ------------------------------------------

template <class T>
class generator {
 public:
  struct promise_type : perfloc::chunk_frame_allocation {
    T value{};
    generator get_return_object() { return generator{std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    std::suspend_always yield_value(T v) noexcept {
      value = v;
      return {};
    }
    void return_void() noexcept {}
    void unhandled_exception() { std::terminate(); }
  };

  generator(generator&& other) noexcept : handle_(std::exchange(other.handle_, {})) {}
  ~generator() {
    if (handle_) handle_.destroy();
  }
  bool next() {
    handle_.resume();
    return !handle_.done();
  }
  const T& value() const { return handle_.promise().value; }

 private:
  explicit generator(std::coroutine_handle<promise_type> handle) : handle_(handle) {}
  std::coroutine_handle<promise_type> handle_;
};

/// First parameter a process_chunk&: the frame is in that chunk. (noinline only so that this small example
/// shows it: when the caller can see the whole coroutine, clang may elide the frame allocation and put the
/// frame on the caller's stack, which is cheaper still.)
[[gnu::noinline]] generator<int> fibonacci(perfloc::process_chunk& chunk, int count) {
  int a = 0, b = 1;
  for (int i = 0; i < count; ++i) {
    co_yield a;
    b = std::exchange(a, b) + b;
  }
}

int main() {
  perfloc::process_chunk chunk{"frames"};
  std::printf("chunk in use before any coroutine: %zu B\n", chunk.stats().in_use_bytes);

  asio::io_context io;
  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    auto call = sum_of_squares(chunk, 100);  // the frame is made here, in the chunk
    std::printf("awaitable frame made: chunk in use %zu B\n", chunk.stats().in_use_bytes);
    const long sum = co_await std::move(call);
    std::printf("sum of squares 1..100 = %ld; the frame is gone: chunk in use %zu B\n", sum,
                chunk.stats().in_use_bytes);
  }, asio::detached);
  io.run();

  {
    generator<int> numbers = fibonacci(chunk, 12);
    std::printf("generator frame made: chunk in use %zu B\nfibonacci:", chunk.stats().in_use_bytes);
    while (numbers.next()) std::printf(" %d", numbers.value());
    std::printf("\n");
  }
  std::printf("generator destroyed: chunk in use %zu B\n", chunk.stats().in_use_bytes);
  return chunk.stats().in_use_bytes == 0 ? 0 : 1;
}
