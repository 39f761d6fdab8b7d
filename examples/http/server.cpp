// examples/http/server.cpp — perfloc-http: an HTTP/1.1 server on Boost.Beast with a chunk per connection and
// a chunk per request, or (--heap global) the same server on the global heap.
//
//   perfloc-http --port PORT [--threads N] [--heap perfloc|global] [--idle-timeout SECONDS]
//                [--count-heap-calls] [--svg PATH]
//
//   GET /items?count=N   200, a JSON array of N objects {"id":i,"name":"item-i"} (0 <= N <= 10000)
//   POST /echo           200, the body echoed
//   GET /stats           200, the top chunk's figures and, per label, its live chunks, their bytes in use and
//                        the largest peak in use of one of them (JSON)
//   anything else        404
//
// Where the memory goes (perfloc): each connection is a coroutine started by perfloc::co_spawn, labelled
// "connection". Its chunk holds what an idle keep-alive connection needs and nothing more: the coroutine's
// entry frame (with the socket) and the session's frame (its first parameter is the chunk; its deadline is a
// local in it), and the idle wait's operation (perfloc::use_chunk, reused wait after wait), which waits until
// the socket is readable and reads nothing. When a request's first bytes arrive, a chunk labelled "request" is
// opened and everything about
// the request lives there: the frame of serve_request (its first parameter is that chunk) with the parser and
// the response, the buffer the request is read into, the parsed fields and body and the response's
// (std::pmr allocators on the chunk's resource), and the memory of the request's reads and writes (use_chunk
// bound to a perfloc::allocator of the request's chunk). So no request, however large, leaves anything in
// its connection's chunk or grows it: connection chunks learn a first region that fits an idle connection
// (2 KiB). A pipelined request's first bytes, read with the one before, are copied into its own chunk,
// opened before the previous one is released. The request chunk is released when the response has been
// written, the connection chunk when the coroutine ends: on close, error, timeout, disconnect, or at
// shutdown. With --heap global the same session runs with asio::co_spawn, asio::use_awaitable and
// std::pmr::new_delete_resource(): one code path, two heaps.
//
// `Expect: 100-continue` (HTTP/1.1): `100 Continue` once the header is parsed, before the body is read; with a
// Content-Length over the limit, 413 instead, the body unread.
//
// Bad input: a malformed request → 400 and close; a header section over 8 KiB → 431; a body over 1 MiB → 413;
// no complete request within --idle-timeout of its first byte, or no byte within --idle-timeout of the last
// response → closed. SIGINT/SIGTERM: stop accepting, finish the requests in flight, close the rest, print the
// release hook's histogram of bytes per request and perfloc::report(top), exit 0. SIGUSR1 writes the top
// chunk's picture to --svg PATH (the demo does this mid-load).
//
// Timeouts: one timer for the whole server checks every connection's deadline four times a second and shuts
// down the socket of a connection past it (class deadlines). Beast's tcp_stream would arm a timer for every
// read and write, and Asio takes each such wait from a per-thread cache of two blocks that many connections
// overflow: a heap allocation per request, whatever the heap of the request.
//
// --threads N runs the io_context on N threads, each connection on its own strand.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory_resource>
#include <optional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http.hpp>

import perfloc;

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using asio::ip::tcp;

// --count-heap-calls: the malloc family replaced, each allocating call counted (atomically: --threads N).
#define PERFLOC_HEAP_CALLS_ATOMIC 1
#include "../../bench/heap_calls.hpp"

namespace {

// ---- Types: every allocation of a message goes through a std::pmr resource -----------------------------

using pmr_allocator = std::pmr::polymorphic_allocator<char>;
using fields = bhttp::basic_fields<pmr_allocator>;
using body = bhttp::basic_string_body<char, std::char_traits<char>, pmr_allocator>;
using request = bhttp::request<body, fields>;
using response = bhttp::response<body, fields>;
using request_parser = bhttp::request_parser<body, pmr_allocator>;

/// A connection's socket. Its executor is the io_context's (8 bytes), not any_io_executor (56): the socket
/// lives in the connection's frame for as long as the connection is open. Its operations still complete on the
/// connection's strand, the coroutine's executor, through their handlers.
using connection_socket = asio::basic_stream_socket<tcp, asio::io_context::executor_type>;

constexpr std::uint32_t header_limit = 8 * 1024;
constexpr std::uint64_t body_limit = 1024 * 1024;
constexpr int max_items = 10'000;

// ---- Deadlines: one timer for every connection ----------------------------------------------------------------

/// The connections' deadlines. A connection registers for its lifetime (the entry lives in its coroutine
/// frame) and moves its deadline with one atomic store per request; check() shuts down the socket of every
/// connection past its deadline, which ends its pending read or write with an error, so its coroutine ends.
/// check() touches only the descriptor, through ::shutdown, never the socket object: the connection may be
/// using it on another thread. An entry leaves the list before its socket is closed, so a descriptor number
/// reused by a new connection is never shut down by mistake.
class deadlines {
  struct link {
    link* previous = this;
    link* next = this;
  };

 public:
  class entry : link {
   public:
    entry(deadlines& list, int descriptor) : list_(&list), descriptor_(descriptor) { list.add(*this); }
    entry(const entry&) = delete;
    entry& operator=(const entry&) = delete;
    ~entry() { list_->remove(*this); }

    void expire_after(std::chrono::steady_clock::duration d) {
      deadline_.store((std::chrono::steady_clock::now() + d).time_since_epoch().count(), std::memory_order_relaxed);
    }

   private:
    friend class deadlines;
    deadlines* list_;
    int descriptor_;
    std::atomic<std::chrono::steady_clock::rep> deadline_{-1};  ///< -1: none
  };

  /// Shuts down every connection past its deadline.
  void check() {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    std::lock_guard lock{mutex_};
    for (link* l = head_.next; l != &head_; l = l->next) {
      entry& e = static_cast<entry&>(*l);
      const auto deadline = e.deadline_.load(std::memory_order_relaxed);
      if (deadline < 0 || deadline > now) continue;
      ::shutdown(e.descriptor_, SHUT_RDWR);
      e.deadline_.store(-1, std::memory_order_relaxed);
    }
  }

 private:
  void add(entry& e) {
    std::lock_guard lock{mutex_};
    e.previous = head_.previous;
    e.next = &head_;
    head_.previous->next = &e;
    head_.previous = &e;
  }
  void remove(entry& e) {
    std::lock_guard lock{mutex_};
    e.previous->next = e.next;
    e.next->previous = e.previous;
  }

  std::mutex mutex_;
  link head_;
};

// ---- What the whole server shares ------------------------------------------------------------------------

struct settings {
  unsigned short port = 0;
  int threads = 1;
  bool perfloc = true;
  std::chrono::seconds idle_timeout{30};
  bool count_heap_calls = false;
  std::string svg;
};

/// Bytes per request, from the top chunk's release hook: peak in-use bytes of each "request" chunk, by
/// power of two. Atomics: the hook runs on whichever thread releases the chunk.
struct request_histogram {
  std::array<std::atomic<std::uint64_t>, 40> buckets{};  // bucket b: peak <= 2^b bytes

  void record(std::size_t peak) {
    const auto b = static_cast<std::size_t>(std::bit_width(std::max<std::size_t>(peak, 1) - 1));
    buckets[std::min(b, buckets.size() - 1)].fetch_add(1, std::memory_order_relaxed);
  }
  void print() const {
    std::uint64_t total = 0;
    for (const auto& b : buckets) total += b.load();
    std::printf("bytes per request (peak in-use bytes of each request chunk, from the release hook):\n");
    if (total == 0) {
      std::printf("  no request chunk was released\n");
      return;
    }
    for (std::size_t b = 0; b < buckets.size(); ++b) {
      const std::uint64_t n = buckets[b].load();
      if (n == 0) continue;
      std::printf("  <= %8llu B %10llu %s\n", 1ull << b, static_cast<unsigned long long>(n),
                  std::string(static_cast<std::size_t>(n * 50 / total) + 1, '#').c_str());
    }
  }
};

struct server_context {
  perfloc::top_chunk& top;
  const settings& options;
  std::atomic<std::uint64_t> requests{0};  ///< responses written
  /// Heap calls made by the server's observers (the /stats answers, the pictures), left out of /stats'
  /// heap_calls: the demo reads /stats before and after its rounds, and one of the two answers would otherwise
  /// fall inside the count (for_each_chunk takes its snapshot of the live chunks on the heap).
  std::atomic<long> observer_heap_calls{0};

  /// Runs `observe`, booking its heap calls as the observer's (exact with one thread; with more, other threads'
  /// heap calls meanwhile are booked too). Returns them.
  template <class F>
  long observing(F observe) {
    const long before = perfloc_heap_calls::count.load();
    observe();
    const long calls = perfloc_heap_calls::count.load() - before;
    observer_heap_calls.fetch_add(calls);
    return calls;
  }
  /// The process's heap calls so far, less the observers'.
  long heap_calls() const { return perfloc_heap_calls::count.load() - observer_heap_calls.load(); }
  deadlines timeouts;
  /// Requests being served, and (stopping_bit) whether the server is shutting down: one word, so that a
  /// request either starts before the shutdown sees the count, or is refused.
  std::atomic<std::uint64_t> in_flight{0};
  static constexpr std::uint64_t stopping_bit = std::uint64_t{1} << 63;

  bool begin_request() {
    std::uint64_t state = in_flight.load();
    do {
      if (state & stopping_bit) return false;
    } while (!in_flight.compare_exchange_weak(state, state + 1));
    return true;
  }
  void end_request() { in_flight.fetch_sub(1); }
  bool stopping() const { return (in_flight.load() & stopping_bit) != 0; }
};

/// Ends a request's count however the session leaves it (a return, an exception, the frame destroyed).
struct request_in_flight {
  server_context* context;
  explicit request_in_flight(server_context& c) : context(&c) {}
  request_in_flight(const request_in_flight&) = delete;
  ~request_in_flight() { context->end_request(); }
};

// ---- The two heaps: where a connection's and a request's memory comes from ------------------------------

struct perfloc_heap {
  using connection = perfloc::process_chunk;  ///< the session's first parameter: its frame goes in the chunk
  using request = perfloc::process_chunk;     ///< serve_request's first parameter: its frame goes in the chunk
  static request open_request(server_context& context) { return perfloc::process_chunk{context.top, "request"}; }
  static std::pmr::memory_resource* resource(perfloc::process_chunk& chunk) { return chunk.resource(); }

  /// The connection's own operation, the idle wait: its memory from the connection's chunk, reused wait after
  /// wait.
  static constexpr auto token = perfloc::use_chunk;
  /// A request's operations: their memory from the request's chunk, released with it.
  static auto request_token(request& chunk) {
    return asio::bind_allocator(perfloc::allocator<std::byte>(chunk), perfloc::use_chunk);
  }
};

struct global_heap {
  struct connection {};
  struct request {};
  static request open_request(server_context&) { return {}; }
  static std::pmr::memory_resource* resource(connection&) { return std::pmr::new_delete_resource(); }
  static std::pmr::memory_resource* resource(request&) { return std::pmr::new_delete_resource(); }

  static constexpr auto token = asio::use_awaitable;
  static auto request_token(request&) { return asio::use_awaitable; }
};

// ---- Building the answers (no I/O) -------------------------------------------------------------------------

void append_number(std::pmr::string& out, std::uint64_t n) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out.append(digits, end);
}

/// A label as a JSON string (labels are UTF-8, at most 47 bytes, as perfloc keeps them).
void append_json_string(std::pmr::string& out, std::string_view text) {
  out += '"';
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
      out += escaped;
    } else {
      out += c;
    }
  }
  out += '"';
}

/// `count=N` from a query string, or -1 when absent, not a number or out of range.
int item_count(std::string_view query) {
  while (!query.empty()) {
    const std::string_view pair = query.substr(0, query.find('&'));
    query.remove_prefix(std::min(query.size(), pair.size() + 1));
    if (!pair.starts_with("count=")) continue;
    const std::string_view value = pair.substr(6);
    int n = -1;
    const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (error != std::errc{} || end != value.data() + value.size() || n < 0 || n > max_items) return -1;
    return n;
  }
  return -1;
}

void items(std::pmr::string& out, int count) {
  out.reserve(2 + static_cast<std::size_t>(count) * 34);
  out += '[';
  for (int i = 0; i < count; ++i) {
    if (i) out += ',';
    out += "{\"id\":";
    append_number(out, static_cast<std::uint64_t>(i));
    out += ",\"name\":\"item-";
    append_number(out, static_cast<std::uint64_t>(i));
    out += "\"}";
  }
  out += ']';
}

/// What /stats says about the live chunks of one label.
struct label_figures {
  std::uint64_t chunks = 0;
  std::uint64_t in_use_bytes = 0;
  std::uint64_t max_peak_bytes = 0;  ///< the largest peak in use of one of them
};

/// `,"NAME":{"label":value,...}` for one figure of every label.
template <class Figure>
void append_by_label(std::pmr::string& out, std::string_view name,
                     const std::pmr::map<std::pmr::string, label_figures>& by_label, Figure figure) {
  out += ",\"";
  out += name;
  out += "\":{";
  bool first = true;
  for (const auto& [label, figures] : by_label) {
    if (!first) out += ',';
    first = false;
    append_json_string(out, label);
    out += ':';
    append_number(out, figure(figures));
  }
  out += '}';
}

void stats(std::pmr::string& out, server_context& context, std::pmr::memory_resource* memory) {
  const perfloc::top_stats top = context.top.stats();
  std::pmr::map<std::pmr::string, label_figures> by_label{memory};
  context.observing([&] {
    context.top.for_each_chunk([&](const perfloc::chunk_summary& chunk) {
      label_figures& figures = by_label[std::pmr::string(chunk.label, memory)];
      ++figures.chunks;
      figures.in_use_bytes += chunk.in_use_bytes;
      figures.max_peak_bytes = std::max<std::uint64_t>(figures.max_peak_bytes, chunk.peak_in_use_bytes);
    });
  });
  out += "{\"heap\":";
  out += context.options.perfloc ? "\"perfloc\"" : "\"global\"";
  out += ",\"live_chunks\":";
  append_number(out, top.live_chunks);
  out += ",\"in_use_bytes\":";
  append_number(out, top.in_use_bytes);
  out += ",\"committed_bytes\":";
  append_number(out, top.committed_bytes);
  append_by_label(out, "chunks_by_label", by_label, [](const label_figures& f) { return f.chunks; });
  append_by_label(out, "in_use_by_label", by_label, [](const label_figures& f) { return f.in_use_bytes; });
  append_by_label(out, "max_peak_by_label", by_label, [](const label_figures& f) { return f.max_peak_bytes; });
  out += ",\"requests\":";
  append_number(out, context.requests.load());
  out += ",\"in_flight\":";  // requests being served, this one included
  append_number(out, context.in_flight.load() & ~server_context::stopping_bit);
  out += ",\"heap_calls\":";
  if (perfloc_heap_calls::available && context.options.count_heap_calls) {
    append_number(out, static_cast<std::uint64_t>(context.heap_calls()));
  } else {
    out += "null";
  }
  out += '}';
}

/// The answer to a parsed request, in `response` (whose fields and body use the request's memory).
void answer(const request& req, response& res, server_context& context, std::pmr::memory_resource* memory) {
  const std::string_view target{req.target().data(), req.target().size()};
  const std::string_view path = target.substr(0, target.find('?'));
  const std::string_view query = path.size() < target.size() ? target.substr(path.size() + 1) : std::string_view{};
  res.result(bhttp::status::ok);
  if (req.method() == bhttp::verb::get && path == "/items") {
    const int count = item_count(query);
    if (count < 0) {
      res.result(bhttp::status::bad_request);
      res.body() = "count must be a whole number from 0 to 10000\n";
      res.set(bhttp::field::content_type, "text/plain");
      return;
    }
    items(res.body(), count);
    res.set(bhttp::field::content_type, "application/json");
  } else if (req.method() == bhttp::verb::post && path == "/echo") {
    res.body() = req.body();  // same resource: a copy into the request's chunk, as the global heap does
    const auto type = req.find(bhttp::field::content_type);
    res.set(bhttp::field::content_type,
            type != req.end() ? type->value() : beast::string_view("application/octet-stream"));
  } else if (req.method() == bhttp::verb::get && path == "/stats") {
    stats(res.body(), context, memory);
    res.set(bhttp::field::content_type, "application/json");
  } else {
    res.result(bhttp::status::not_found);
    res.body() = "not found\n";
    res.set(bhttp::field::content_type, "text/plain");
  }
}

/// The interim answer to `Expect: 100-continue`.
constexpr std::string_view continue_answer = "HTTP/1.1 100 Continue\r\n\r\n";

/// Whether the client waits for `100 Continue` before sending the body: HTTP/1.1 and `Expect: 100-continue`
/// (an HTTP/1.0 client's Expect is ignored, as RFC 9110 requires).
bool expects_continue(const request& req) {
  if (req.version() < 11) return false;
  const auto expect = req[bhttp::field::expect];
  return beast::iequals(expect, "100-continue");
}

/// The status for a read that failed, or 0 when the connection just ends (peer gone, timeout, shutdown).
bhttp::status status_for(const beast::error_code& error) {
  if (error == bhttp::error::header_limit) return bhttp::status::request_header_fields_too_large;
  if (error == bhttp::error::body_limit) return bhttp::status::payload_too_large;
  if (error == bhttp::error::end_of_stream || error == bhttp::error::partial_message) return bhttp::status::unknown;
  if (&error.category() == &bhttp::make_error_code(bhttp::error::bad_method).category())
    return bhttp::status::bad_request;  // every other parse error: a malformed request line, header or body
  return bhttp::status::unknown;
}

// ---- A connection ---------------------------------------------------------------------------------------

/// The bytes a pipelined request starts with: what the request before it read past its own end, kept in this
/// request's memory until its buffer takes them (none: data is null).
struct first_bytes {
  char* data = nullptr;
  std::size_t size = 0;
};

/// Serves one request in `memory` (with perfloc_heap its chunk: this frame, the buffer the request is read
/// into, the parser, the response and the memory of every operation are in it). Returns whether the
/// connection stays open for another request. Bytes read past this request's end (pipelining) go into
/// `next`, the next request's memory, opened here, and `bytes` says where they are.
template <class Heap>
asio::awaitable<bool> serve_request(typename Heap::request& memory, server_context& context, connection_socket& socket,
                                    deadlines::entry& deadline, first_bytes& bytes,
                                    std::optional<typename Heap::request>& next) {
  // Not const: Asio's allocator_binder hands its target token on as an lvalue.
  auto token = asio::as_tuple(Heap::request_token(memory));
  const auto idle = context.options.idle_timeout;
  std::pmr::memory_resource* resource = Heap::resource(memory);
  beast::basic_flat_buffer<pmr_allocator> buffer{pmr_allocator{resource}};
  buffer.commit(
      asio::buffer_copy(buffer.prepare(std::max<std::size_t>(bytes.size, 1024)), asio::buffer(bytes.data, bytes.size)));
  if (bytes.data) resource->deallocate(bytes.data, bytes.size, 1);
  bytes = {};

  request_parser parser{std::piecewise_construct, std::make_tuple(pmr_allocator{resource}),
                        std::make_tuple(pmr_allocator{resource})};
  parser.header_limit(header_limit);
  parser.body_limit(body_limit);
  // Parsed from what the buffer holds, reading more only when the parser needs it. (Beast's http::async_read
  // posts its completion when the buffer already holds the request, and that post goes through
  // any_io_executor, which drops the handler's allocator: a heap allocation per request.)
  beast::error_code read_error;
  bool header_seen = false;
  for (;;) {
    if (buffer.size() > 0) {
      const std::size_t used = parser.put(buffer.data(), read_error);
      buffer.consume(used);
      if (read_error == bhttp::error::need_more) {
        read_error = {};
      } else if (read_error || parser.is_done()) {
        break;  // a request, or a parse error (limits included)
      } else if (used > 0) {
        continue;  // the header is done: the body next, from what is left
      }
    }
    if (!header_seen && parser.is_header_done()) {
      header_seen = true;
      // The body is still to come. A client that sent `Expect: 100-continue` waits for this interim answer
      // before sending it (RFC 9110, 10.1.1). A Content-Length over the limit never gets here: the parser
      // fails the header with body_limit, and the 413 below goes out without reading the body.
      if (expects_continue(parser.get())) {
        auto [error, n] = co_await asio::async_write(socket, asio::buffer(continue_answer), token);
        if (error) co_return false;
      }
    }
    auto [error, n] = co_await socket.async_read_some(buffer.prepare(beast::read_size(buffer, 65536)), token);
    if (error) co_return false;  // the client went away mid-request, or timed out
    buffer.commit(n);
  }
  response res{std::piecewise_construct, std::make_tuple(pmr_allocator{resource}),
               std::make_tuple(pmr_allocator{resource})};
  bool keep_alive = false;
  bhttp::status failure = bhttp::status::unknown;
  if (read_error) {
    failure = status_for(read_error);
    if (failure == bhttp::status::unknown) co_return false;  // the client went away (mid-request) or timed out
    res.result(failure);
    res.version(11);
    res.set(bhttp::field::content_type, "text/plain");
    const auto reason = bhttp::obsolete_reason(failure);
    res.body().assign(reason.data(), reason.size());
    res.body() += '\n';
    res.keep_alive(false);
  } else {
    const request& req = parser.get();
    answer(req, res, context, resource);
    res.version(req.version());
    keep_alive = req.keep_alive() && !context.stopping();
    res.keep_alive(keep_alive);
  }
  res.prepare_payload();
  deadline.expire_after(idle);  // a client that does not read its response is closed too
  auto [write_error, bytes_written] = co_await bhttp::async_write(socket, res, token);
  if (write_error) co_return false;  // the client went away mid-response
  context.requests.fetch_add(1, std::memory_order_relaxed);

  if (failure != bhttp::status::unknown) {
    // Lingering close: the client may still be sending the body we refused; read and drop it for a short
    // while so that closing does not reset the connection before the client has read the answer.
    beast::error_code ignored;
    socket.shutdown(connection_socket::shutdown_send, ignored);
    deadline.expire_after(std::min<std::chrono::steady_clock::duration>(idle, std::chrono::seconds(2)));
    for (std::size_t drained = 0; drained < 4 * body_limit;) {
      buffer.clear();
      auto [error, n] = co_await socket.async_read_some(buffer.prepare(4096), token);
      if (error) break;
      drained += n;
    }
    co_return false;
  }
  if (!keep_alive) {
    beast::error_code ignored;
    socket.shutdown(connection_socket::shutdown_send, ignored);
    co_return false;
  }
  if (buffer.size() > 0) {  // the next request has started (pipelining): its bytes go to its own memory
    next.emplace(Heap::open_request(context));
    auto* copy = static_cast<char*>(Heap::resource(*next)->allocate(buffer.size(), 1));
    bytes = {copy, asio::buffer_copy(asio::buffer(copy, buffer.size()), buffer.data())};
  }
  co_return true;
}

/// What a socket the idle wait found readable has: a byte to read; the end (closed by the peer, reset, or shut
/// down past its deadline); or nothing (with several threads on one epoll, a readiness event can outlive the
/// bytes that caused it). A function of its own, so that its locals stay out of the session's frame.
enum class readable { bytes, end, nothing };
[[gnu::noinline]] readable peek(connection_socket& socket) {
  char byte;
  beast::error_code error;
  socket.receive(asio::buffer(&byte, 1), connection_socket::message_peek, error);  // non-blocking (session)
  if (error == asio::error::would_block) return readable::nothing;
  return error ? readable::end : readable::bytes;
}

/// Serves one connection until it closes. With perfloc_heap the first parameter is the connection's chunk,
/// so this frame is allocated in it. What an idle connection holds is this frame (its deadline; the socket
/// lives in the entry frame, in the lambda that started the session, and this frame holds a reference: one
/// copy, not two) and the idle wait's operation, which reads nothing (a buffer for the first bytes would take
/// room in every idle connection): everything about a request is in the request's
/// memory, opened when its first bytes arrive and released when it is answered, so that requests, whatever
/// they are, never grow the connection's chunk (and the chunks opened here learn a first region that fits
/// an idle connection).
template <class Heap>
asio::awaitable<void> session(typename Heap::connection& connection, server_context& context,
                              connection_socket& socket) {
  deadlines::entry deadline{context.timeouts, socket.native_handle()};  // leaves the list before the socket closes
  {
    beast::error_code ignored;
    socket.non_blocking(true, ignored);  // the idle wait's peek returns would_block rather than blocking
  }
  std::optional<typename Heap::request> next;  // a pipelined request's memory, holding its first bytes
  first_bytes bytes;
  for (;;) {
    if (!next) {  // wait for the next request's first bytes, reading none of them here
      deadline.expire_after(context.options.idle_timeout);
      auto [error] = co_await socket.async_wait(connection_socket::wait_read, asio::as_tuple(Heap::token));
      if (error) co_return;
      const readable what = peek(socket);
      if (what == readable::nothing) continue;  // a stale readiness event: wait again
      if (what == readable::end) co_return;     // no request chunk is opened for a connection that ended
    }
    deadline.expire_after(context.options.idle_timeout);  // the whole request: a slow sender is closed
    if (!context.begin_request()) co_return;              // shutting down: serve no new request
    request_in_flight counted{context};
    typename Heap::request memory = next ? std::move(*next) : Heap::open_request(context);
    next.reset();
    if (!co_await serve_request<Heap>(memory, context, socket, deadline, bytes, next)) co_return;
  }  // the request's memory is released here (the next request's, if any, holds the bytes past it)
}

global_heap::connection no_connection_memory;

/// Starts a connection's session on `executor`: the io_context's, or a strand of its own.
void start_session(server_context& context, const asio::any_io_executor& executor, connection_socket socket) {
  if (context.options.perfloc) {
    perfloc::co_spawn(
        context.top, "connection", executor,
        [&context, s = std::move(socket)](perfloc::process_chunk& connection) mutable {
          return session<perfloc_heap>(connection, context, s);
        },
        asio::detached);
  } else {
    asio::co_spawn(
        executor,
        [&context, s = std::move(socket)]() mutable { return session<global_heap>(no_connection_memory, context, s); },
        asio::detached);
  }
}

/// Accepts until the acceptor is closed; each connection on its own strand when several threads run.
asio::awaitable<void> listen(server_context& context, tcp::acceptor& acceptor, asio::io_context& io) {
  for (;;) {
    auto [error, socket] = co_await acceptor.async_accept(io, asio::as_tuple(asio::use_awaitable));
    if (error == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (error) {  // out of file descriptors, say: wait, then accept again
      asio::steady_timer pause{acceptor.get_executor(), std::chrono::milliseconds(50)};
      co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    start_session(context,
                  context.options.threads > 1 ? asio::any_io_executor(asio::make_strand(io))
                                              : asio::any_io_executor(io.get_executor()),
                  std::move(socket));
  }
}

/// SIGINT/SIGTERM: close the acceptor, refuse new requests, wait for the ones in flight, then stop the
/// io_context (the idle connections' coroutines are destroyed with it, releasing their chunks).
asio::awaitable<void> stop_on_signal(server_context& context, asio::signal_set& signals, tcp::acceptor& acceptor,
                                     asio::io_context& io) {
  auto [error, signal_number] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
  if (error) co_return;
  context.in_flight.fetch_or(server_context::stopping_bit);
  beast::error_code ignored;
  acceptor.close(ignored);
  asio::steady_timer poll{acceptor.get_executor()};
  while ((context.in_flight.load() & ~server_context::stopping_bit) != 0) {
    poll.expires_after(std::chrono::milliseconds(5));
    co_await poll.async_wait(asio::as_tuple(asio::use_awaitable));
  }
  io.stop();
}

/// The deadlines' timer: four checks a second (a connection is closed at most 250 ms after its deadline).
asio::awaitable<void> check_deadlines(server_context& context) {
  asio::steady_timer tick{co_await asio::this_coro::executor};
  for (;;) {
    tick.expires_after(std::chrono::milliseconds(250));
    auto [error] = co_await tick.async_wait(asio::as_tuple(asio::use_awaitable));
    if (error) co_return;
    context.timeouts.check();
  }
}

/// SIGUSR1: write the top chunk's picture (the demo asks for it mid-load).
asio::awaitable<void> picture_on_signal(server_context& context, asio::signal_set& signals) {
  for (;;) {
    auto [error, signal_number] = co_await signals.async_wait(asio::as_tuple(asio::use_awaitable));
    if (error) co_return;
    if (context.options.svg.empty()) continue;
    const std::uint64_t live = context.top.stats().live_chunks;
    // The picture's own heap calls are the observer's, not the requests': /stats leaves them out.
    const long calls = context.observing([&] { perfloc::write_svg(context.top, context.options.svg); });
    std::printf("wrote %s (%llu live chunks; the picture made %ld heap calls)\n", context.options.svg.c_str(),
                static_cast<unsigned long long>(live), calls);
    std::fflush(stdout);
  }
}

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "perfloc-http: %s\nusage: perfloc-http --port PORT [--threads N] [--heap perfloc|global] "
               "[--idle-timeout SECONDS] [--count-heap-calls] [--svg PATH]\n",
               problem);
  std::exit(2);
}

long whole_number(const char* text, long low, long high, const char* what) {
  long n = 0;
  const char* end = text + std::strlen(text);
  const auto [stop, error] = std::from_chars(text, end, n);
  if (error != std::errc{} || stop != end || n < low || n > high) usage(what);
  return n;
}

settings parse(int argc, char** argv) {
  settings s;
  bool port_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view option = argv[i];
    if (option == "--count-heap-calls") {
      s.count_heap_calls = true;
      continue;
    }
    if (i + 1 >= argc) usage("an option without its value");
    const char* value = argv[++i];
    if (option == "--port") {
      s.port = static_cast<unsigned short>(whole_number(value, 0, 65535, "--port takes 0 to 65535"));
      port_given = true;
    } else if (option == "--threads") {
      s.threads = static_cast<int>(whole_number(value, 1, 256, "--threads takes 1 to 256"));
    } else if (option == "--heap") {
      if (std::string_view(value) != "perfloc" && std::string_view(value) != "global")
        usage("--heap takes perfloc or global");
      s.perfloc = std::string_view(value) == "perfloc";
    } else if (option == "--idle-timeout") {
      s.idle_timeout = std::chrono::seconds(whole_number(value, 1, 86400, "--idle-timeout takes 1 to 86400"));
    } else if (option == "--svg") {
      s.svg = value;
    } else {
      usage("unknown option");
    }
  }
  if (!port_given) usage("--port is required");
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  const settings options = parse(argc, argv);
  perfloc_heap_calls::counting.store(options.count_heap_calls);
  request_histogram histogram;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&histogram](const perfloc::chunk_summary& chunk) {
    if (chunk.label == "request") histogram.record(chunk.peak_in_use_bytes);
  }}};
  server_context context{top, options};
  {
    asio::io_context io{options.threads};
    {
      const auto control = asio::make_strand(io);  // the acceptor and the signals, never at once
      tcp::acceptor acceptor{control, tcp::endpoint{asio::ip::make_address("127.0.0.1"), options.port}};
      asio::signal_set stop_signals{control, SIGINT, SIGTERM};
      asio::signal_set picture_signals{control, SIGUSR1};
      asio::co_spawn(control, listen(context, acceptor, io), asio::detached);
      asio::co_spawn(control, stop_on_signal(context, stop_signals, acceptor, io), asio::detached);
      asio::co_spawn(control, picture_on_signal(context, picture_signals), asio::detached);
      asio::co_spawn(control, check_deadlines(context), asio::detached);
      std::printf("listening on 127.0.0.1:%u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
      std::fflush(stdout);
      std::vector<std::thread> threads;
      for (int i = 1; i < options.threads; ++i) threads.emplace_back([&io] { io.run(); });
      io.run();
      for (std::thread& t : threads) t.join();
      perfloc_heap_calls::counting.store(false);
    }
  }  // the io_context is gone: the idle connections' coroutines with it, and their chunks
  std::printf("served %llu requests\n", static_cast<unsigned long long>(context.requests.load()));
  histogram.print();
  std::fputs(perfloc::report(top).c_str(), stdout);
  std::fflush(stdout);
  return top.stats().live_chunks == 0 ? 0 : 1;
}
