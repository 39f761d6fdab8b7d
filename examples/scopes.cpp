// examples/scopes.cpp — what perfloc does, step by step, with the figures it reports.
//
// Each "request" gets its own process chunk: its objects are made with a pointer bump, one is destroyed
// early, and the rest die together when the scope ends. The top chunk's statistics show memory committed
// once and reused, live chunks returning to zero, and in-use bytes back to where they started.
#include <cstdio>
#include <string>
#include <vector>

import perfloc;

namespace {

struct order_line {
  std::string item;
  int quantity;
  order_line(std::string i, int q) : item(std::move(i)), quantity(q) {}
  ~order_line() { ++destroyed; }
  static inline int destroyed = 0;
};

void print_top(const char* when, const perfloc::top_chunk& top) {
  const perfloc::top_stats s = top.stats();
  std::printf("%-28s live chunks %llu, in use %zu B, committed %zu KiB, reserved %zu GiB\n", when,
              static_cast<unsigned long long>(s.live_chunks), s.in_use_bytes, s.committed_bytes >> 10,
              s.reserved_bytes >> 30);
}

/// One request: a scope with its own arena.
std::size_t serve(int request, perfloc::top_chunk& top) {
  perfloc::process_chunk chunk{top, "request " + std::to_string(request)};
  std::vector<order_line*> lines;
  for (int i = 0; i < 50; ++i) lines.push_back(chunk.make<order_line>("widget #" + std::to_string(i), i));
  perfloc::destroy(lines.front());  // one object dies early, from its pointer alone
  auto* scratch = static_cast<char*>(chunk.allocate(4096));  // raw memory, released with the chunk
  std::snprintf(scratch, 4096, "request %d: %zu lines", request, lines.size());
  return chunk.stats().in_use_bytes;
}  // the other 49 destructors run here, and the chunk's blocks go back to the top chunk

}  // namespace

int main() {
  perfloc::top_chunk& top = perfloc::default_top();
  print_top("before any request:", top);

  {
    perfloc::process_chunk outer{"outer scope"};
    outer.make<order_line>("kept until the outer scope ends", 1);
    print_top("outer scope open:", top);
    const std::size_t per_request = serve(1, top);
    std::printf("request 1 used %zu B of its chunk; %d order lines destroyed so far\n", per_request,
                order_line::destroyed);
    for (int request = 2; request <= 10000; ++request) serve(request, top);
    std::printf("served 10000 requests; %d order lines destroyed\n", order_line::destroyed);
    print_top("after 10000 requests:", top);
  }
  print_top("outer scope released:", top);
  std::printf("%d order lines destroyed in all (10000 x 50 + 1)\n", order_line::destroyed);
  return order_line::destroyed == 10000 * 50 + 1 && top.stats().live_chunks == 0 ? 0 : 1;
}
