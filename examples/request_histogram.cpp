// examples/request_histogram.cpp — where did the memory of each request go?
//
// A top chunk with a release hook: every request scope gets a labelled process chunk, and when the chunk
// is released the hook receives its final statistics. Here they are aggregated into a histogram of peak
// bytes per request, per route; mid-run, perfloc::report() lists the live chunks and perfloc::write_svg()
// draws the top chunk.
//
//   perfloc-request-histogram [--svg PATH]      (PATH defaults to request-histogram.svg)
#include <array>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <string_view>
#include <vector>

import perfloc;

namespace {

/// Peak bytes per request, in power-of-two buckets from 1 KiB to 1 MiB, per route.
struct histogram {
  static constexpr int buckets = 11;
  std::map<std::string, std::array<unsigned, buckets>> counts;
  std::map<std::string, std::size_t> most;

  void add(std::string_view route, std::size_t peak) {
    int bucket = 0;
    while (bucket + 1 < buckets && peak > (std::size_t{1024} << bucket)) ++bucket;
    ++counts[std::string(route)][bucket];
    auto& m = most[std::string(route)];
    m = std::max(m, peak);
  }

  void print() const {
    std::printf("\npeak bytes per request, by route (each # is 2%% of that route's requests):\n");
    for (const auto& [route, row] : counts) {
      unsigned total = 0;
      for (unsigned c : row) total += c;
      std::printf("  %s: %u requests, the largest %zu bytes\n", route.c_str(), total, most.at(route));
      for (int b = 0; b < buckets; ++b) {
        if (!row[b]) continue;
        const std::string bar(row[b] * 50 / total + 1, '#');
        std::printf("    <= %5zu KiB %6u %s\n", std::size_t{1} << b, row[b], bar.c_str());
      }
    }
  }
};

struct product {
  char name[48];
  double price;
};

/// A request: a few objects, a scratch buffer, a list of results; how much depends on the route.
void handle(perfloc::top_chunk& top, const char* route, int size, std::mt19937& random) {
  perfloc::process_chunk chunk{top, route};
  perfloc::vector<product> results{chunk};
  for (int i = 0; i < size; ++i) {
    product& p = results.emplace_back();
    std::snprintf(p.name, sizeof p.name, "product %d", i);
    p.price = 1.0 + i;
  }
  std::vector<char, perfloc::allocator<char>> body{perfloc::allocator<char>{chunk}};
  body.resize(static_cast<std::size_t>(size) * (64 + random() % 64));
  std::memset(body.data(), ' ', body.size());
}

}  // namespace

int main(int argc, char** argv) {
  const char* svg_path = "request-histogram.svg";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string_view(argv[i]) == "--svg") svg_path = argv[i + 1];

  histogram peaks;
  unsigned released = 0;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
    peaks.add(s.label, s.peak_in_use_bytes);
    ++released;
  }}};

  std::mt19937 random(42);
  const std::array<std::pair<const char*, int>, 3> routes{{{"GET /products", 200}, {"GET /product/:id", 4},
                                                           {"POST /cart", 30}}};
  for (int request = 0; request < 20000; ++request) {
    const auto& [route, typical] = routes[random() % routes.size()];
    handle(top, route, 1 + static_cast<int>(random() % (2 * typical)), random);
    if (request == 10000) {  // mid-run: a few long-lived sessions are open; show them
      std::vector<perfloc::process_chunk> sessions;
      for (int s = 0; s < 3; ++s) {
        sessions.emplace_back(top, "session " + std::to_string(s));
        for (int k = 0; k < 2000 * (s + 1); ++k) sessions.back().allocate(100);
      }
      std::printf("%s", perfloc::report(top).c_str());
      perfloc::write_svg(top, svg_path);
      std::printf("wrote %s\n", svg_path);
    }
  }
  peaks.print();
  std::printf("\n%u chunks released through the hook; %llu live now\n", released,
              static_cast<unsigned long long>(top.stats().live_chunks));
  return top.stats().live_chunks == 0 && released == 20003 ? 0 : 1;
}
