// Tests of what perfloc tells about its memory: labels, per-chunk statistics, the release hook,
// top_chunk::for_each_chunk, perfloc::report and perfloc::write_svg.
#define BOOST_TEST_MODULE perfloc.observe
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

import perfloc;

namespace {

constexpr std::size_t KiB = 1024;

struct tracked {
  static inline std::atomic<int> alive{0};  // made on several threads in the walk test
  std::uint64_t payload[4]{};
  tracked() { ++alive; }
  ~tracked() { --alive; }
};

/// What the model expects a chunk to report.
struct model {
  std::size_t in_use = 0, peak = 0;
  std::uint64_t made = 0, destroyed = 0;
  void add(std::size_t n) { peak = std::max(peak, in_use += n); }
  void sub(std::size_t n) { in_use -= n; }
};

std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }
constexpr std::size_t tracked_bytes = (32 + sizeof(tracked) + 15) / 16 * 16;  // record, header, object

std::map<std::string, perfloc::chunk_summary> live_by_label(const perfloc::top_chunk& top) {
  std::map<std::string, perfloc::chunk_summary> chunks;
  top.for_each_chunk([&](const perfloc::chunk_summary& c) { chunks[std::string(c.label)] = c; });
  return chunks;
}

/// A minimal XML well-formedness check: tags balance, attributes are quoted, nothing is left open.
bool well_formed(const std::string& xml, std::string& why) {
  std::vector<std::string> open;
  for (std::size_t at = 0; (at = xml.find('<', at)) != std::string::npos;) {
    const std::size_t end = xml.find('>', at);
    if (end == std::string::npos) return why = "unterminated tag", false;
    std::string tag = xml.substr(at + 1, end - at - 1);
    at = end + 1;
    if (tag.starts_with("?") || tag.starts_with("!")) continue;
    if (tag.starts_with("/")) {
      if (open.empty() || open.back() != tag.substr(1)) return why = "unbalanced </" + tag.substr(1) + ">", false;
      open.pop_back();
      continue;
    }
    if (std::count(tag.begin(), tag.end(), '\'') % 2 || std::count(tag.begin(), tag.end(), '"') % 2)
      return why = "unquoted attribute in <" + tag + ">", false;
    const bool self_closing = tag.ends_with("/");
    const std::string name = tag.substr(0, tag.find_first_of(" /"));
    if (!self_closing) open.push_back(name);
  }
  if (!open.empty()) return why = "<" + open.back() + "> left open", false;
  return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(labels_are_kept_bounded_and_copied) {
  perfloc::top_chunk top;
  std::string label = "GET /users";
  perfloc::process_chunk chunk{top, label};
  label = "changed after construction";
  BOOST_TEST(chunk.label() == "GET /users");
  const std::string long_label(100, 'x');
  perfloc::process_chunk cut{top, long_label};
  BOOST_TEST(cut.label() == long_label.substr(0, 47));
  perfloc::process_chunk unlabelled{top};
  BOOST_TEST(unlabelled.label().empty());
  const auto chunks = live_by_label(top);
  BOOST_TEST(chunks.size() == 3u);
  BOOST_TEST(chunks.count("GET /users") == 1u);
  BOOST_TEST(chunks.count(long_label.substr(0, 47)) == 1u);
}

BOOST_AUTO_TEST_CASE(per_chunk_statistics_follow_a_model) {
  perfloc::top_chunk top;
  perfloc::process_chunk chunk{top, "model"};
  model expected;
  std::vector<std::pair<void*, std::size_t>> raw;
  std::vector<tracked*> objects;
  for (int i = 0; i < 200; ++i) {
    const std::size_t bytes = static_cast<std::size_t>(i * 37 % 900);
    raw.emplace_back(chunk.allocate(bytes), bytes);
    expected.add(footprint(bytes));
    objects.push_back(chunk.make<tracked>());
    expected.add(tracked_bytes);
    ++expected.made;
    if (i % 3 == 0) {
      chunk.deallocate(raw.back().first, raw.back().second);
      expected.sub(footprint(raw.back().second));
      raw.pop_back();
      perfloc::destroy(objects.back());
      objects.pop_back();
      expected.sub(tracked_bytes);
      ++expected.destroyed;
    }
  }
  void* big = chunk.allocate(300 * KiB);  // a block of its own
  expected.add(300 * KiB);
  chunk.deallocate(big, 300 * KiB);
  expected.sub(300 * KiB);

  const perfloc::chunk_stats stats = chunk.stats();
  BOOST_TEST(stats.in_use_bytes == expected.in_use);
  BOOST_TEST(stats.peak_in_use_bytes == expected.peak);
  BOOST_TEST(stats.objects_made == expected.made);
  BOOST_TEST(stats.objects_destroyed == expected.destroyed);
  BOOST_TEST(stats.blocks >= 1u);
  BOOST_TEST(stats.held_bytes >= stats.in_use_bytes);
  const perfloc::chunk_summary live = live_by_label(top).at("model");
  BOOST_TEST(live.in_use_bytes == expected.in_use);
  BOOST_TEST(live.peak_in_use_bytes == expected.peak);
  BOOST_TEST(live.blocks == stats.blocks);
  BOOST_TEST(live.held_bytes == stats.held_bytes);
  BOOST_TEST(live.objects_made == expected.made);
  BOOST_TEST(live.lifetime.count() == -1);  // no release hook: no clock read at open
  BOOST_TEST(std::string(live.opened_at.file_name()).ends_with("observe.test.cpp"));
}

BOOST_AUTO_TEST_CASE(blocks_and_held_bytes_count_growth_and_own_blocks) {
  perfloc::top_chunk top;
  perfloc::process_chunk chunk{top};
  BOOST_TEST(chunk.stats().blocks == 1u);
  BOOST_TEST(chunk.stats().held_bytes == 64 * KiB);
  for (int i = 0; i < 100; ++i) chunk.allocate(1000);  // outgrows the first block
  const std::size_t grown = chunk.stats().blocks;
  BOOST_TEST(grown == 2u);
  void* own = chunk.allocate(1024 * KiB);
  BOOST_TEST(chunk.stats().blocks == grown + 1);
  chunk.deallocate(own, 1024 * KiB);
  BOOST_TEST(chunk.stats().blocks == grown);
}

BOOST_AUTO_TEST_CASE(the_release_hook_is_called_once_per_release_with_the_final_figures) {
  std::vector<perfloc::chunk_summary> released;
  std::vector<std::string> labels;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
    released.push_back(s);
    labels.emplace_back(s.label);  // the view is valid during the call only
  }}};
  tracked::alive = 0;
  {
    perfloc::process_chunk request{top, "GET /orders"};
    for (int i = 0; i < 10; ++i) request.make<tracked>();
    perfloc::destroy(request.make<tracked>());
    request.allocate(5000);
    void* scratch = request.allocate(20000);
    request.deallocate(scratch, 20000);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  BOOST_REQUIRE(released.size() == 1u);
  const perfloc::chunk_summary& s = released[0];
  BOOST_TEST(labels[0] == "GET /orders");
  BOOST_TEST(s.objects_made == 11u);
  BOOST_TEST(s.objects_destroyed == 11u);  // one by destroy, ten by the release
  BOOST_TEST(tracked::alive == 0);
  BOOST_TEST(s.in_use_bytes == 10 * tracked_bytes + footprint(5000));
  BOOST_TEST(s.peak_in_use_bytes == 11 * tracked_bytes + footprint(5000) + footprint(20000) - tracked_bytes);
  BOOST_TEST(s.lifetime >= std::chrono::milliseconds(2));
  BOOST_TEST(s.blocks >= 1u);
  {
    perfloc::process_chunk a{top, "a"}, b{top, "b"};
    perfloc::process_chunk moved = std::move(a);
    moved.release();
    moved.release();  // a second release of an empty handle does not call the hook again
  }
  BOOST_TEST(released.size() == 3u);
  BOOST_TEST((std::multiset<std::string>(labels.begin() + 1, labels.end()) == std::multiset<std::string>{"a", "b"}));
}

BOOST_AUTO_TEST_CASE(the_hook_sees_chunks_released_on_other_threads) {
  std::atomic<int> calls{0};
  std::atomic<std::size_t> bytes{0};
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
    ++calls;
    bytes += s.in_use_bytes;
  }}};
  std::vector<perfloc::process_chunk> chunks;
  for (int i = 0; i < 50; ++i) {
    chunks.emplace_back(top, "moved");
    chunks.back().allocate(100);
  }
  std::thread([&] { chunks.clear(); }).join();
  BOOST_TEST(calls.load() == 50);
  BOOST_TEST(bytes.load() == 50 * footprint(100));
}

BOOST_AUTO_TEST_CASE(for_each_chunk_walks_safely_while_other_threads_open_and_release) {
  perfloc::top_chunk top;
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t)
    workers.emplace_back([&top, t, &done] {
      const std::string label = "worker " + std::to_string(t);
      while (!done.load()) {
        perfloc::process_chunk chunk{top, label};
        chunk.make<tracked>();
        chunk.allocate(100);
      }
    });
  std::size_t walks = 0, seen = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until) {
    top.for_each_chunk([&](const perfloc::chunk_summary& s) {
      ++seen;
      // A chunk seen mid-change may be caught between its open and its first allocation, but its label is
      // always one that was given, whole.
      BOOST_REQUIRE(s.label.starts_with("worker ") || s.label.empty());
    });
    ++walks;
  }
  done = true;
  for (auto& w : workers) w.join();
  BOOST_TEST(walks > 0u);
  BOOST_TEST_MESSAGE(walks << " walks saw " << seen << " chunks");
  BOOST_TEST(top.stats().live_chunks == 0u);
}

BOOST_AUTO_TEST_CASE(report_lists_live_chunks_by_label_with_totals) {
  perfloc::top_chunk top;
  perfloc::process_chunk a{top, "GET /users"}, b{top, "GET /users"}, c{top, "POST /orders"};
  a.allocate(1000);
  b.make<tracked>();
  c.allocate(64);
  const std::string text = perfloc::report(top);
  BOOST_TEST_MESSAGE(text);
  BOOST_TEST(text.find("3 live chunks") != std::string::npos, text);
  std::istringstream lines(text);
  std::map<std::string, std::string> rows;
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with("  GET") || line.starts_with("  POST")) rows[line.substr(2, line.find("  ", 2) - 2)] = line;
  BOOST_REQUIRE(rows.size() == 2u);
  std::istringstream users(rows.at("GET /users").substr(34));
  std::size_t chunks = 0;
  users >> chunks;
  BOOST_TEST(chunks == 2u);
}

BOOST_AUTO_TEST_CASE(write_svg_draws_every_block_of_every_live_chunk) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 << 20, .retain_bytes = 0}};
  perfloc::process_chunk small{top, "small <&> one"}, grown{top, "grown"};
  small.allocate(100);
  for (int i = 0; i < 2000; ++i) grown.allocate(200);  // several blocks
  grown.allocate(2 << 20);                             // and one of its own
  {
    perfloc::process_chunk gone{top, "released"};
    for (int i = 0; i < 2000; ++i) gone.allocate(200);
  }
  const auto path = std::filesystem::temp_directory_path() / "perfloc-observe-test.svg";
  perfloc::write_svg(top, path);
  std::ifstream in(path);
  const std::string svg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(path);
  std::string why;
  BOOST_TEST(well_formed(svg, why), why);
  BOOST_TEST(svg.find("small &lt;&amp;&gt; one") != std::string::npos);

  // Distinct blocks drawn per chunk (a block spanning rows is several rectangles with one data-block).
  std::map<std::string, std::set<std::string>> blocks_of;
  for (std::size_t at = 0; (at = svg.find("data-block='", at)) != std::string::npos;) {
    const std::size_t id_end = svg.find('\'', at + 12);
    const std::string id = svg.substr(at + 12, id_end - at - 12);
    const std::size_t title = svg.find("<title>", id_end) + 7;
    const std::string text = svg.substr(title, svg.find(',', title) - title);
    blocks_of[text].insert(id);
    at = id_end;
  }
  BOOST_TEST(blocks_of["chunk 'grown'"].size() == grown.stats().blocks);
  BOOST_TEST(blocks_of["chunk 'small &lt;&amp;&gt; one'"].size() == small.stats().blocks);
  BOOST_TEST(blocks_of.count("chunk 'released'") == 0u);
  BOOST_TEST(blocks_of["top chunk header"].size() == 1u);
  std::size_t total = 0;
  for (auto& [kind, ids] : blocks_of) total += ids.size();
  const std::size_t declared = std::stoul(svg.substr(svg.find("data-blocks='") + 13));
  BOOST_TEST(total == declared);
  BOOST_CHECK_THROW(perfloc::write_svg(top, "/nonexistent-directory/x.svg"), std::system_error);
}
