// Tests of what perfloc tells about its memory: labels, per-chunk statistics, the release hook,
// top_chunk::for_each_chunk, perfloc::report and perfloc::write_svg.
//
// Expectations come from the documented constants (blocks of 64 KiB, then 128 KiB, 256 KiB, ...; 16-byte
// footprints; a block of its own for requests above 256 KiB), from a model of the bytes a test hands out,
// and, for the SVG, from an XML parser (xmllint, from Debian's libxml2-utils; see tools/dev).
#define BOOST_TEST_MODULE perfloc.observe
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "death.hpp"

import perfloc;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB;

struct tracked {
  static inline std::atomic<int> alive{0};  // made on several threads in the walk test
  std::uint64_t payload[4]{};
  tracked() { ++alive; }
  ~tracked() { --alive; }
};

/// What the model expects a chunk to report.
struct model {
  std::size_t in_use = 0, peak = 0, ever = 0;
  std::uint64_t made = 0, destroyed = 0;
  void add(std::size_t n) { peak = std::max(peak, in_use += n), ever += n; }
  void sub(std::size_t n) { in_use -= n; }
};

std::size_t footprint(std::size_t bytes) { return ((bytes ? bytes : 1) + 15) & ~std::size_t{15}; }
constexpr std::size_t tracked_bytes = (32 + sizeof(tracked) + 15) / 16 * 16;  // record, header, object

std::map<std::string, perfloc::chunk_summary> live_by_label(const perfloc::top_chunk& top) {
  std::map<std::string, perfloc::chunk_summary> chunks;
  top.for_each_chunk([&](const perfloc::chunk_summary& c) { chunks[std::string(c.label)] = c; });
  return chunks;
}

/// Runs a shell command; its standard output and exit status.
struct command_result {
  int status = -1;
  std::string out;
};
command_result run(const std::string& command) {
  command_result result;
  FILE* pipe = ::popen(command.c_str(), "r");
  BOOST_REQUIRE_MESSAGE(pipe, "cannot run " << command);
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.out.append(buffer, n);
  result.status = ::pclose(pipe);
  return result;
}

/// xmllint's verdict on a file: "" when it is well-formed XML, else its complaint.
std::string xml_errors(const std::filesystem::path& file) {
  const command_result r = run("xmllint --noout '" + file.string() + "' 2>&1");
  return r.status == 0 ? "" : "xmllint: " + r.out;
}

/// The value of an XPath 1.0 expression (a number or a string) over a file, by xmllint.
std::string xpath(const std::filesystem::path& file, const std::string& expression) {
  command_result r = run("xmllint --xpath \"" + expression + "\" '" + file.string() + "' 2>/dev/null");
  while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r.out;
}
double xpath_number(const std::filesystem::path& file, const std::string& expression) {
  const std::string text = xpath(file, "string(" + expression + ")");  // a number alone prints 6 digits
  BOOST_TEST_REQUIRE(!text.empty(), expression);
  return std::stod(text);
}

std::filesystem::path scratch_file(const std::string& name) {
  return std::filesystem::temp_directory_path() / ("perfloc-observe-" + std::to_string(::getpid()) + "-" + name);
}

/// Code points in a UTF-8 string: the columns it takes in a terminal (for the scripts used here).
std::size_t columns(const std::string& text) {
  return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

const std::string e_acute = "\xC3\xA9", euro = "\xE2\x82\xAC", grin = "\xF0\x9F\x98\x80", replacement = "\xEF\xBF\xBD";

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Labels
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(labels_are_copied_and_cut_on_a_character_boundary) {
  perfloc::top_chunk top;
  std::string label = "GET /users";
  perfloc::process_chunk chunk{top, label};
  label = "changed after construction";
  BOOST_TEST(chunk.label() == "GET /users");

  // label given -> label kept: at most 47 bytes, cut before a character that does not fit, invalid bytes
  // replaced by U+FFFD.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {std::string(100, 'x'), std::string(47, 'x')},
      {std::string(45, 'a') + e_acute, std::string(45, 'a') + e_acute},  // 47 bytes: whole
      {std::string(46, 'b') + e_acute, std::string(46, 'b')},            // 48: the 2-byte character goes
      {std::string(44, 'c') + euro, std::string(44, 'c') + euro},        // 47: whole
      {std::string(45, 'd') + euro + "zz", std::string(45, 'd')},        // the 3-byte character goes
      {std::string(43, 'e') + grin, std::string(43, 'e') + grin},        // 47: whole
      {std::string(44, 'f') + grin, std::string(44, 'f')},               // 48: the 4-byte character goes
      {euro + euro + e_acute + grin, euro + euro + e_acute + grin},      // short, all multi-byte
      {"na\xC3\xAFve \xFF\xFE!", "na\xC3\xAFve " + replacement + replacement + "!"},
      {"lone \x80 continuation", "lone " + replacement + " continuation"},
      {"cut short \xE2\x82", "cut short " + replacement},
      {std::string(45, 'g') + "\xFF", std::string(45, 'g')},  // its replacement would not fit
      {"", ""},
  };
  std::vector<perfloc::process_chunk> chunks;
  for (const auto& [given, kept] : cases) {
    chunks.emplace_back(top, given);
    BOOST_TEST(chunks.back().label() == kept, "label given: " << given);
  }
  std::multiset<std::string> walked, expected{"GET /users"};
  for (const auto& [given, kept] : cases) expected.insert(kept);
  top.for_each_chunk([&](const perfloc::chunk_summary& c) { walked.emplace(c.label); });
  BOOST_TEST((walked == expected));
}

BOOST_AUTO_TEST_CASE(the_release_hook_and_the_report_see_a_label_of_the_longest_kept_length_whole) {
  // Labels keep up to 47 bytes (README): one of exactly 47 reaches the hook and report() whole, one of 48
  // loses its last byte.
  std::vector<std::string> hooked;
  perfloc::top_chunk top{perfloc::top_options{
      .on_release = [&](const perfloc::chunk_summary& s) { hooked.emplace_back(s.label); }}};
  const std::string longest(47, 'q'), too_long = std::string(47, 'r') + "s";
  {
    perfloc::process_chunk a{top, longest}, b{top, too_long};
    const std::string text = perfloc::report(top);
    BOOST_TEST(text.find("\"" + longest + "\"") != std::string::npos, text);
    BOOST_TEST(text.find("\"" + std::string(47, 'r') + "\"") != std::string::npos, text);
  }
  BOOST_TEST((hooked == std::vector<std::string>{std::string(47, 'r'), longest}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_walker_reads_each_label_whole_while_metas_are_reused) {
  perfloc::top_chunk top;
  // Different lengths and multi-byte characters; the same thread reuses one meta for each.
  const std::vector<std::string> labels = {"POST /orders/" + euro + "/items/" + grin + "/confirm", "GET /u",
                                           "PUT /" + e_acute + e_acute + e_acute, "DELETE /sessions/current/token"};
  const std::set<std::string> given(labels.begin(), labels.end());
  std::atomic<bool> done{false};
  std::vector<std::thread> owners;
  for (int t = 0; t < 2; ++t)
    owners.emplace_back([&, t] {
      for (std::size_t i = t; !done.load(std::memory_order_relaxed); ++i) {
        perfloc::process_chunk chunk{top, labels[i % labels.size()]};
        chunk.allocate(64);
      }
    });
  std::size_t seen = 0;
  std::string torn;
  for (int walk = 0; walk < 20000 && torn.empty(); ++walk)
    top.for_each_chunk([&](const perfloc::chunk_summary& c) {
      ++seen;
      if (!given.count(std::string(c.label))) torn = std::string(c.label);
    });
  done = true;
  for (auto& t : owners) t.join();
  BOOST_TEST(torn.empty(), "a walker read the label '" << torn << "'");
  BOOST_TEST_MESSAGE("20000 walks saw " << seen << " chunks");
}

// ---------------------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------------------

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

  // Blocks: 64 KiB, then 128 KiB. What is live does not fit the first; all that was ever bumped (reused
  // or not) fits both, with room to spare for the chunk and block headers.
  const std::size_t bumped = expected.ever - 300 * KiB;
  BOOST_TEST_REQUIRE(expected.in_use > 64 * KiB);
  BOOST_TEST_REQUIRE(bumped < 64 * KiB + 128 * KiB - 4 * KiB);
  const perfloc::chunk_stats stats = chunk.stats();
  BOOST_TEST(stats.in_use_bytes == expected.in_use);
  BOOST_TEST(stats.peak_in_use_bytes == expected.peak);
  BOOST_TEST(stats.objects_made == expected.made);
  BOOST_TEST(stats.objects_destroyed == expected.destroyed);
  BOOST_TEST(stats.blocks == 2u);
  BOOST_TEST(stats.held_bytes == 192 * KiB);
  const perfloc::chunk_summary live = live_by_label(top).at("model");
  BOOST_TEST(live.in_use_bytes == expected.in_use);
  BOOST_TEST(live.peak_in_use_bytes == expected.peak);
  BOOST_TEST(live.blocks == 2u);
  BOOST_TEST(live.held_bytes == 192 * KiB);
  BOOST_TEST(live.objects_made == expected.made);
  BOOST_TEST(live.objects_destroyed == expected.destroyed);
  BOOST_TEST(live.lifetime.count() == -1);  // no release hook: no clock read at open
  BOOST_TEST(std::string(live.opened_at.file_name()).ends_with("observe.test.cpp"));
}

BOOST_AUTO_TEST_CASE(blocks_and_held_bytes_count_growth_and_own_blocks) {
  perfloc::top_chunk top;
  perfloc::process_chunk chunk{top};
  BOOST_TEST(chunk.stats().blocks == 1u);
  BOOST_TEST(chunk.stats().held_bytes == 64 * KiB);
  for (int i = 0; i < 100; ++i) chunk.allocate(1000);  // 100 000 bytes: outgrows the first block
  BOOST_TEST(chunk.stats().blocks == 2u);
  BOOST_TEST(chunk.stats().held_bytes == 192 * KiB);
  void* own = chunk.allocate(1 * MiB);  // a 1 MiB block of its own: the allocation fills it
  BOOST_TEST(chunk.stats().blocks == 3u);
  BOOST_TEST(chunk.stats().held_bytes == 192 * KiB + 1 * MiB);
  chunk.deallocate(own, 1 * MiB);
  BOOST_TEST(chunk.stats().blocks == 2u);
  BOOST_TEST(chunk.stats().held_bytes == 192 * KiB);
}

BOOST_AUTO_TEST_CASE(statistics_read_from_other_threads_are_never_impossible) {
  // Owners allocate and free 64 B, grow, take and give back blocks of their own, release and reopen;
  // readers check in_use <= held <= committed on every read of chunk.stats(), top.stats() and
  // for_each_chunk. retain_bytes is large, so committed_bytes never falls: read after a chunk's figures,
  // it bounds them.
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 256 * MiB, .retain_bytes = 256 * MiB}};
  std::atomic<bool> done{false};
  std::vector<perfloc::process_chunk> watched;  // one per owner, read by the reader through stats()
  for (int t = 0; t < 2; ++t) watched.emplace_back(top, "watched");
  std::vector<std::thread> owners;
  for (int t = 0; t < 2; ++t)
    owners.emplace_back([&, t] {
      perfloc::process_chunk& mine = watched[t];
      for (std::size_t round = 0; !done.load(std::memory_order_relaxed); ++round) {
        perfloc::process_chunk chunk{top, "churn"};
        for (int i = 0; i < 200; ++i) {
          chunk.deallocate(chunk.allocate(64), 64);
          mine.deallocate(mine.allocate(64), 64);
        }
        for (int i = 0; i < 700; ++i) chunk.allocate(200);  // grows past the first block
        if (round % 4 == 0) mine.deallocate(mine.allocate(300 * KiB), 300 * KiB);
        void* own = chunk.allocate(300 * KiB);
        chunk.deallocate(own, 300 * KiB);
      }
    });
  std::size_t reads = 0, failures = 0;
  std::string first_failure;
  auto expect = [&](bool ok, const std::string& what) {
    ++reads;
    if (!ok && !failures++) first_failure = what;
  };
  for (int i = 0; i < 4000; ++i) {
    for (const perfloc::process_chunk& c : watched) {
      const perfloc::chunk_stats s = c.stats();
      const std::size_t committed = top.stats().committed_bytes;
      expect(s.in_use_bytes <= s.held_bytes && s.held_bytes <= committed,
             "chunk.stats(): " + std::to_string(s.in_use_bytes) + " in use, " + std::to_string(s.held_bytes) +
                 " held, " + std::to_string(committed) + " committed");
    }
    const perfloc::top_stats totals = top.stats();
    expect(totals.in_use_bytes <= totals.committed_bytes,
           "top.stats(): " + std::to_string(totals.in_use_bytes) + " in use, " +
               std::to_string(totals.committed_bytes) + " committed");
    std::vector<perfloc::chunk_summary> seen;
    top.for_each_chunk([&](const perfloc::chunk_summary& s) { seen.push_back(s); });
    const std::size_t committed = top.stats().committed_bytes;
    for (const perfloc::chunk_summary& s : seen)
      // Its first region holds 1 KiB at least, every other block 64 KiB.
      expect(s.in_use_bytes <= s.held_bytes && s.held_bytes <= committed && s.blocks >= 1 &&
                 (s.blocks - 1) * 64 * KiB + 1 * KiB <= s.held_bytes,
             "for_each_chunk: " + std::to_string(s.in_use_bytes) + " in use, " + std::to_string(s.held_bytes) +
                 " held in " + std::to_string(s.blocks) + " blocks, " + std::to_string(committed) + " committed");
  }
  done = true;
  for (auto& t : owners) t.join();
  BOOST_TEST(failures == 0u, failures << " of " << reads << " reads impossible, the first: " << first_failure);
}

BOOST_AUTO_TEST_CASE(a_chunk_read_from_another_thread_shows_only_states_it_passed_through) {
  // The owner keeps a first piece of 64 bytes (32-byte aligned: no alignment gap follows), then takes five
  // more and gives them back, over and over: three on the fast path, a 32-byte aligned one (the slow path
  // moves the cursor after three bumps), one more, then five steps back. The chunk is at every moment in
  // one of six states, 64 to 384 bytes in use in steps of 64, in its one block. Every read from another
  // thread must be one of them. A read that mixes the figures from before and after the cursor's move or
  // the first step back counts the bumped bytes twice (448 or more) or subtracts them once too often (a
  // wrapped number near 2^64). The reads are many and cheap so that some land in the middle of a change
  // whatever the machine; they count only while the owner is stepping (both loops are bounded by counts:
  // the reader's and the owner's).
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 * MiB, .retain_bytes = 64 * MiB}};
  constexpr std::uint64_t reads = 3'000'000, steps = 600'000;  // a step: five takes, five give-backs
  std::atomic<const perfloc::process_chunk*> published{nullptr};
  std::atomic<std::uint64_t> stepped{0};
  std::atomic<bool> done{false};
  std::size_t held = 0;
  std::thread owner([&] {
    perfloc::process_chunk chunk{top, "stepping"};
    chunk.allocate(64, 32);
    held = chunk.stats().held_bytes;
    published.store(&chunk, std::memory_order_release);
    void* taken[5];
    for (std::uint64_t n = 1; !done.load(std::memory_order_acquire); ++n) {  // the reads come before the release
      for (int i = 0; i < 5; ++i) taken[i] = chunk.allocate(64, i == 3 ? 32 : 16);
      for (int i = 5; i-- > 0;) chunk.deallocate(taken[i], 64);
      stepped.store(n, std::memory_order_relaxed);
    }
  });
  const perfloc::process_chunk* chunk;
  while (!(chunk = published.load(std::memory_order_acquire))) std::this_thread::yield();
  std::uint64_t read = 0, impossible = 0;
  std::string first;
  while (read < reads || stepped.load(std::memory_order_relaxed) < steps) {
    const perfloc::chunk_stats s = chunk->stats();
    ++read;
    const bool possible = s.in_use_bytes % 64 == 0 && s.in_use_bytes >= 64 && s.in_use_bytes <= 384 &&
                          s.held_bytes == held && s.blocks == 1 && s.peak_in_use_bytes <= 384;
    if (!possible && !impossible++)
      first = std::to_string(s.in_use_bytes) + " in use (peak " + std::to_string(s.peak_in_use_bytes) + "), " +
              std::to_string(s.held_bytes) + " held in " + std::to_string(s.blocks) + " blocks";
  }
  done = true;
  owner.join();
  BOOST_TEST_MESSAGE(read << " reads during " << stepped.load() << " steps");
  BOOST_TEST(held == 64 * KiB);  // the first block
  BOOST_TEST(impossible == 0u, impossible << " of " << read << " reads show a state the chunk never had, the first: "
                                          << first);
}

BOOST_AUTO_TEST_CASE(readings_from_another_thread_follow_the_owners_operations_as_the_chunk_grows_and_shrinks) {
  // The same promise seen another way. The owner runs a script of operations over and over, each taking or
  // giving back a piece of 64 bytes, and counts them: up to 1500 pieces (the chunk grows past its first
  // block), then down to none, in groups of three times two takes on the fast path and a 32-byte aligned one
  // (the slow path: the cursor moves after two bumps), three takes more, then eleven or thirteen give-backs
  // (the bump steps back after four bumps). A reading torn in those changes is off by two pieces or more,
  // more than one operation changes: the script makes such tears visible. After `op` operations
  // the chunk holds held_after[op % period] pieces, so a reading taken between two loads of the count,
  // o1 <= o2, must show 64 times the pieces held after some op in [o1, o2 + 1] (the next operation may be
  // under way). The reader reads chunk.stats() in bursts of four (more of its time in reads), and after every
  // 16th burst top.stats() and for_each_chunk too (the chunk is the top's only one). A reading that mixes the figures from before and after a change counts
  // bytes twice or none, or subtracts across blocks. Bounded by counts: the reader's and the owner's.
  enum step : std::uint8_t { take, take_aligned, give_back };
  std::vector<step> script;
  std::vector<std::size_t> held_after{0};  // pieces held after each operation of a pass, from the one before
  const auto add = [&](step s, int times) {
    for (int i = 0; i < times; ++i) {
      script.push_back(s);
      held_after.push_back(held_after.back() + (s == give_back ? -1 : 1));
    }
  };
  constexpr std::size_t pieces = 1500;
  const auto takes = [&] {
    for (int i = 0; i < 3; ++i) add(take, 2), add(take_aligned, 1);
    add(take, 3);
  };
  while (held_after.back() < pieces) takes(), add(give_back, 11);
  while (held_after.back() > 0) takes(), add(give_back, 13);
  const std::uint64_t period = script.size();  // held_after[period] == held_after[0] == 0
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 * MiB, .retain_bytes = 64 * MiB}};
  constexpr std::uint64_t reads = 4'000'000, passes = 50;
  std::atomic<const perfloc::process_chunk*> published{nullptr};
  std::atomic<std::uint64_t> ops{0};
  std::atomic<bool> done{false};
  std::thread owner([&] {
    perfloc::process_chunk chunk{top, "growing"};
    std::vector<void*> taken;
    published.store(&chunk, std::memory_order_release);
    std::uint64_t op = 0;
    while (!done.load(std::memory_order_acquire)) {  // the reads come before the release
      for (const step s : script) {
        if (s == give_back) {
          chunk.deallocate(taken.back(), 64);
          taken.pop_back();
        } else {
          taken.push_back(chunk.allocate(64, s == take_aligned ? 32 : 16));
        }
        ops.store(++op, std::memory_order_release);
      }
    }
  });
  const perfloc::process_chunk* chunk;
  while (!(chunk = published.load(std::memory_order_acquire))) std::this_thread::yield();
  std::uint64_t read = 0, bursts = 0, impossible = 0;
  std::string first;
  const auto check = [&](std::uint64_t o1, std::uint64_t o2, std::size_t in_use, std::size_t held,
                         const char* what) {
    ++read;
    std::size_t low = pieces + 1, high = 0;
    for (std::uint64_t op = o1; op <= o2 + 1 && op <= o1 + period; ++op) {
      low = std::min(low, held_after[op % period]);
      high = std::max(high, held_after[op % period]);
    }
    const bool possible = in_use % 64 == 0 && in_use / 64 >= low && in_use / 64 <= high && in_use <= held;
    if (!possible && !impossible++)
      first = std::string(what) + ": " + std::to_string(in_use) + " bytes in use (" + std::to_string(low * 64) +
              " to " + std::to_string(high * 64) + " possible), " + std::to_string(held) + " held";
  };
  while (read < reads || ops.load(std::memory_order_relaxed) < passes * period) {
    std::uint64_t o1 = ops.load(std::memory_order_acquire);
    perfloc::chunk_stats s[4];
    for (perfloc::chunk_stats& one : s) one = chunk->stats();
    std::uint64_t o2 = ops.load(std::memory_order_acquire);
    for (const perfloc::chunk_stats& one : s) check(o1, o2, one.in_use_bytes, one.held_bytes, "chunk.stats()");
    if (++bursts % 16) continue;
    o1 = ops.load(std::memory_order_acquire);
    const perfloc::top_stats totals = top.stats();
    o2 = ops.load(std::memory_order_acquire);
    check(o1, o2, totals.in_use_bytes, totals.committed_bytes, "top.stats()");
    o1 = ops.load(std::memory_order_acquire);
    std::size_t in_use = 0, held = 0;
    top.for_each_chunk([&](const perfloc::chunk_summary& c) {
      in_use += c.in_use_bytes;
      held += c.held_bytes;
    });
    o2 = ops.load(std::memory_order_acquire);
    check(o1, o2, in_use, held, "for_each_chunk");
  }
  done = true;
  owner.join();
  BOOST_TEST_MESSAGE(read << " reads during " << ops.load() << " operations");
  BOOST_TEST(held_after.back() == 0u);
  BOOST_TEST(impossible == 0u, impossible << " of " << read << " reads show a state the chunk never had, the first: "
                                          << first);
}

// ---------------------------------------------------------------------------------------------------------
// The release hook and for_each_chunk
// ---------------------------------------------------------------------------------------------------------

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
  BOOST_TEST(s.blocks == 1u);  // 25 KiB at the peak: the first 64 KiB block holds it
  BOOST_TEST(s.held_bytes == 64 * KiB);
  {
    perfloc::process_chunk a{top, "a"}, b{top, "b"};
    perfloc::process_chunk moved = std::move(a);
    moved.release();
    moved.release();  // a second release of an empty handle does not call the hook again
  }
  BOOST_TEST(released.size() == 3u);
  BOOST_TEST((std::multiset<std::string>(labels.begin() + 1, labels.end()) == std::multiset<std::string>{"a", "b"}));
}

BOOST_AUTO_TEST_CASE(a_release_hook_may_open_chunks_of_its_own_top) {
  // A hook that formats its log line in a scratch chunk of the same top. The scratch chunks are not
  // reported to the hook (documented): one call per chunk the program released. In a child process: on
  // failure the recursion overflows the stack.
  const perfloc_test::death child = perfloc_test::run_in_child([] {
    int calls = 0;
    std::string log;
    perfloc::top_chunk* self = nullptr;
    perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
      ++calls;
      perfloc::process_chunk scratch{*self, "log line"};
      char* line = static_cast<char*>(scratch.allocate(64));
      std::snprintf(line, 64, "%.*s: %zu", static_cast<int>(s.label.size()), s.label.data(), s.in_use_bytes);
      log += line;
      log += '\n';
    }}};
    self = &top;
    for (int i = 0; i < 3; ++i) {
      perfloc::process_chunk request{top, "GET /" + std::to_string(i)};
      request.allocate(100);
    }
    if (calls != 3 || log != "GET /0: 112\nGET /1: 112\nGET /2: 112\n") {
      std::fprintf(stderr, "%d calls, log:\n%s", calls, log.c_str());
      std::exit(3);
    }
  });
  BOOST_TEST(!child.died, child.output);
}

BOOST_AUTO_TEST_CASE(for_each_chunk_reports_lifetimes_when_the_top_has_a_release_hook) {
  perfloc::top_chunk top{perfloc::top_options{.on_release = [](const perfloc::chunk_summary&) {}}};
  using clock = std::chrono::steady_clock;
  const auto before_open = clock::now();
  perfloc::process_chunk chunk{top, "timed"};
  const auto after_open = clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const auto before_walk = clock::now();
  const perfloc::chunk_summary s = live_by_label(top).at("timed");
  const auto after_walk = clock::now();
  // Open and walk happened between these readings of the same clock.
  BOOST_TEST(s.lifetime.count() >= (before_walk - after_open).count());
  BOOST_TEST(s.lifetime.count() <= (after_walk - before_open).count());
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

BOOST_AUTO_TEST_CASE(the_hook_sees_chunks_without_a_label_that_open_and_release_at_home) {
  // Chunks without a label, opened and released at one call site on one thread: once the site has learned
  // its small region, open and release would take their fast paths; a top with a hook keeps them off those
  // paths, so each release calls the hook, with the chunk's own lifetime (its open time was noted).
  int calls = 0;
  bool figures_right = true;
  perfloc::top_chunk top{perfloc::top_options{.on_release = [&](const perfloc::chunk_summary& s) {
    ++calls;
    figures_right = figures_right && s.label.empty() && s.in_use_bytes == footprint(100) && s.blocks == 1u &&
                    s.lifetime >= std::chrono::nanoseconds(0) && s.lifetime < std::chrono::seconds(60);
  }}};
  for (int i = 0; i < 40; ++i) {
    perfloc::process_chunk chunk{top};
    chunk.allocate(100);
  }
  BOOST_TEST(calls == 40);
  BOOST_TEST(figures_right);
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
  // Each worker has at most one chunk open at a time, labelled whole from the start.
  std::size_t seen = 0, wrong = 0;
  for (int walk = 0; walk < 5000; ++walk) {
    std::map<std::string, int> per_label;
    top.for_each_chunk([&](const perfloc::chunk_summary& s) {
      ++seen;
      if (s.label != "worker 0" && s.label != "worker 1") ++wrong;
      if (++per_label[std::string(s.label)] > 1) ++wrong;
      if (s.objects_destroyed > s.objects_made || s.objects_made > 1) ++wrong;
    });
  }
  done = true;
  for (auto& w : workers) w.join();
  BOOST_TEST(wrong == 0u);
  BOOST_TEST_MESSAGE("5000 walks saw " << seen << " chunks");
  BOOST_TEST(top.stats().live_chunks == 0u);
  BOOST_TEST(tracked::alive == 0);
}

// ---------------------------------------------------------------------------------------------------------
// report()
// ---------------------------------------------------------------------------------------------------------

namespace {

/// A row of report(): the label as shown (quoted and escaped, or "(no label)") and the columns after it.
struct report_row {
  std::string label;
  std::vector<std::string> fields;  // chunks, in use, max peak, held, made, destroyed
};

/// Splits report() into its totals line and rows. Columns are separated by two spaces or more.
std::vector<report_row> rows_of(const std::string& text, std::string* totals = nullptr,
                                std::vector<std::string>* table_lines = nullptr) {
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);
  if (totals) *totals = line;
  std::vector<report_row> rows;
  bool header = true;
  while (std::getline(lines, line)) {
    if (table_lines) table_lines->push_back(line);
    if (std::exchange(header, false)) continue;
    report_row row;
    std::size_t at = 2;  // rows are indented by two spaces
    if (line[at] == '"') {
      const std::size_t close = line.find("\" ", at + 1);
      row.label = line.substr(at, close + 1 - at);
      at = close + 1;
    } else {
      row.label = line.substr(at, line.find("  ", at) - at);
      at += row.label.size();
    }
    while (at < line.size()) {
      at = line.find_first_not_of(' ', at);
      if (at == std::string::npos) break;
      std::size_t end = line.find("  ", at);
      if (end == std::string::npos) end = line.size();
      row.fields.push_back(line.substr(at, end - at));
      at = end;
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

BOOST_AUTO_TEST_CASE(report_lists_live_chunks_by_label_with_totals) {
  perfloc::top_chunk top;
  perfloc::process_chunk a{top, "GET /users"}, b{top, "GET /users"}, c{top, "POST /orders"};
  a.allocate(1000);
  b.make<tracked>();
  for (int i = 0; i < 100; ++i) c.allocate(1000);  // grows into a second block of 128 KiB
  const std::string text = perfloc::report(top);
  BOOST_TEST_MESSAGE(text);
  std::string totals;
  const std::vector<report_row> rows = rows_of(text, &totals);
  BOOST_TEST(totals.find(": 3 live chunks,") != std::string::npos, totals);
  BOOST_REQUIRE(rows.size() == 2u);
  std::map<std::string, std::vector<std::string>> by_label;
  for (const report_row& r : rows) by_label[r.label] = r.fields;
  // footprint(1000) + tracked_bytes = 1008 + 64 bytes in use; 100 * 1008 in the other.
  BOOST_TEST((by_label.at("\"GET /users\"") ==
              std::vector<std::string>{"2", "1.0 KiB", "1008 B", "128.0 KiB", "1", "0"}));
  BOOST_TEST((by_label.at("\"POST /orders\"") ==
              std::vector<std::string>{"1", "98.4 KiB", "98.4 KiB", "192.0 KiB", "0", "0"}));
}

BOOST_AUTO_TEST_CASE(report_sums_each_label_over_its_chunks) {
  // Three chunks of one label, each with its own bytes and objects, and one chunk of another label. Each
  // column of a label's row, from footprints (16-byte multiples) and tracked_bytes (64 per object):
  //   in use    (112 + 2 * 64 - 64) + (208 + 64) + 304 = 752 B   (the sum over the chunks)
  //   max peak  max(112 + 128, 208 + 64, 304) = 304 B         (the largest peak of one chunk)
  //   held      3 first blocks of 64 KiB; made 3; destroyed 1
  perfloc::top_chunk top;
  perfloc::process_chunk a{top, "GET /items"}, b{top, "GET /items"}, c{top, "GET /items"}, other{top, "other"};
  a.allocate(100);
  a.make<tracked>();
  perfloc::destroy(a.make<tracked>());
  b.allocate(200);
  b.make<tracked>();
  c.allocate(300);
  other.allocate(50);
  const std::string text = perfloc::report(top);
  BOOST_TEST_MESSAGE(text);
  std::map<std::string, std::vector<std::string>> by_label;
  for (const report_row& r : rows_of(text)) by_label[r.label] = r.fields;
  BOOST_REQUIRE(by_label.size() == 2u);
  BOOST_TEST((by_label["\"GET /items\""] == std::vector<std::string>{"3", "752 B", "304 B", "192.0 KiB", "3", "1"}),
             text);
  BOOST_TEST((by_label["\"other\""] == std::vector<std::string>{"1", "64 B", "64 B", "64.0 KiB", "0", "0"}), text);
}

BOOST_AUTO_TEST_CASE(report_keeps_every_label_apart_on_one_aligned_line) {
  perfloc::top_chunk top;
  const std::string long_label = "GET /" + std::string(20, 'x') + euro + euro + euro + euro + e_acute;
  perfloc::process_chunk unlabelled{top}, fake{top, "(no label)"}, newline{top, "two\nlines"},
      long_one{top, long_label}, short_one{top, "a"};
  const std::string text = perfloc::report(top);
  BOOST_TEST_MESSAGE(text);
  std::vector<std::string> table;
  const std::vector<report_row> rows = rows_of(text, nullptr, &table);
  BOOST_TEST(table.size() == 6u);  // the header and one line per label
  std::set<std::string> labels;
  for (const report_row& r : rows) labels.insert(r.label);
  BOOST_TEST((labels == std::set<std::string>{"(no label)", "\"(no label)\"", "\"two\\nlines\"",
                                              "\"" + long_label + "\"", "\"a\""}));
  for (const std::string& line : table) BOOST_TEST(columns(line) == columns(table[0]), line);
}

BOOST_AUTO_TEST_CASE(report_totals_and_rows_come_from_one_snapshot) {
  perfloc::top_chunk top;
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < 2; ++t)
    workers.emplace_back([&] {
      while (!done.load()) {
        perfloc::process_chunk chunk{top, "busy"};
        chunk.allocate(100);
      }
    });
  perfloc::process_chunk steady{top, "steady"};
  std::size_t mismatches = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string totals;
    const std::vector<report_row> rows = rows_of(perfloc::report(top), &totals);
    unsigned long in_rows = 0;
    for (const report_row& r : rows) in_rows += std::stoul(r.fields.at(0));
    const unsigned long in_totals = std::stoul(totals.substr(totals.find(": ") + 2));
    if (in_rows != in_totals) ++mismatches;
  }
  done = true;
  for (auto& w : workers) w.join();
  BOOST_TEST(mismatches == 0u);
}

BOOST_AUTO_TEST_CASE(report_peak_column_is_the_largest_peak_of_one_chunk) {
  perfloc::top_chunk top;
  perfloc::process_chunk a{top, "x"}, b{top, "x"};
  a.deallocate(a.allocate(3000), 3000);  // peaks of 3008 and 2000 bytes, in use 0
  b.deallocate(b.allocate(2000), 2000);
  const std::string text = perfloc::report(top);
  BOOST_TEST(text.find("max peak") != std::string::npos, text);
  const std::vector<report_row> rows = rows_of(text);
  BOOST_REQUIRE(rows.size() == 1u);
  BOOST_TEST(rows[0].fields.at(2) == "2.9 KiB");  // 3008 bytes, not 5008
}

// ---------------------------------------------------------------------------------------------------------
// write_svg()
// ---------------------------------------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(write_svg_draws_every_block_of_every_live_chunk) {
  perfloc::top_chunk top{perfloc::top_options{.reservation_bytes = 64 * MiB, .retain_bytes = 0}};
  perfloc::process_chunk small{top, "small <&>' one"}, grown{top, "grown"};
  small.allocate(100);
  for (int i = 0; i < 2000; ++i) grown.allocate(200);  // 416 000 bytes: blocks of 64, 128 and 256 KiB
  grown.allocate(2 * MiB);                             // and a 2 MiB block of its own
  {
    perfloc::process_chunk gone{top, "released"};
    for (int i = 0; i < 2000; ++i) gone.allocate(200);
  }
  const auto path = scratch_file("blocks.svg");
  perfloc::write_svg(top, path);
  BOOST_TEST(xml_errors(path) == "");
  auto bytes_of = [&](const std::string& predicate) {
    return xpath_number(path, "sum(//*[@class='block'][" + predicate + "]/@data-bytes)");
  };
  BOOST_TEST(bytes_of("@data-label='grown'") == double(64 * KiB + 128 * KiB + 256 * KiB + 2 * MiB));
  BOOST_TEST(xpath_number(path, "count(//*[@class='block'][@data-label='grown'])") == 4.0);
  BOOST_TEST(bytes_of("@data-label=concat('small <&>', \\\"'\\\", ' one')") == double(64 * KiB));
  BOOST_TEST(xpath_number(path, "count(//*[@data-label='released'])") == 0.0);
  BOOST_TEST(xpath_number(path, "count(//*[@class='block'][@data-kind='top header'])") == 1.0);
  // The map covers the one 64 MiB reservation exactly, block by block, and the meta region's committed part,
  // which is reserved on its own and counts in reserved_bytes.
  BOOST_TEST(bytes_of("@data-kind!='meta region'") == double(64 * MiB));
  BOOST_TEST(bytes_of("@data-kind='meta region'") > 0.0);
  BOOST_TEST(bytes_of("true()") == double(top.stats().reserved_bytes));
  std::filesystem::remove(path);
  BOOST_CHECK_THROW(perfloc::write_svg(top, "/nonexistent-directory/x.svg"), std::system_error);
}

BOOST_AUTO_TEST_CASE(write_svg_is_well_formed_xml_for_any_label) {
  perfloc::top_chunk top;
  std::vector<perfloc::process_chunk> chunks;
  for (const std::string& label :
       {std::string(46, 'b') + e_acute, std::string(45, 'd') + euro, std::string(44, 'f') + grin,
        std::string("quotes ' and \" and <tags> & ampersands"), std::string("new\nline, tab\t, bell\a, \xFF")})
    chunks.emplace_back(top, label).allocate(10);
  const auto path = scratch_file("labels.svg");
  perfloc::write_svg(top, path);
  BOOST_TEST(xml_errors(path) == "");
  std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(write_svg_at_scale_groups_chunks_and_totals_each_label) {
  // 3000 live chunks under 300 labels: the picture stays small, each label gets its own colour and its
  // totals, computed here from what was allocated.
  perfloc::top_chunk top;
  constexpr int chunk_count = 3000, label_count = 300;
  std::vector<perfloc::process_chunk> chunks;
  chunks.reserve(chunk_count);
  chunks.emplace_back(top, std::string("teacher")).allocate(16 * KiB);  // the site learns: whole blocks
  chunks.pop_back();
  for (int i = 0; i < chunk_count; ++i) {
    chunks.emplace_back(top, "route " + std::to_string(i % label_count));
    chunks.back().allocate(16 * static_cast<std::size_t>(1 + i % 7));
  }
  const auto path = scratch_file("scale.svg");
  perfloc::write_svg(top, path);
  BOOST_TEST(xml_errors(path) == "");
  const auto file_bytes = std::filesystem::file_size(path);
  BOOST_TEST(file_bytes < 256 * KiB, file_bytes << " bytes");
  for (int l : {0, 1, 150, 299}) {
    std::size_t in_use = 0;
    for (int i = l; i < chunk_count; i += label_count) in_use += 16 * static_cast<std::size_t>(1 + i % 7);
    const std::string total = "//*[@class='label total'][@data-label='route " + std::to_string(l) + "']";
    BOOST_TEST(xpath(path, "concat(sum(" + total + "/@data-chunks), ' ', sum(" + total + "/@data-in-use), ' ', sum(" +
                               total + "/@data-held))") ==
               "10 " + std::to_string(in_use) + " " + std::to_string(10 * 64 * KiB));
  }
  BOOST_TEST(xpath_number(path, "count(//*[@class='label total'])") == double(label_count));
  // One colour per label: 300 distinct fills (whole degrees of hue would give at most 360, in steps that
  // collide once rounded). xmllint prints each attribute as fill="...".
  std::istringstream fills_text(xpath(path, "//*[@class='label total']/@fill"));
  std::set<std::string> fills;
  for (std::string fill; fills_text >> fill;) fills.insert(fill);
  BOOST_TEST(fills.size() == std::size_t{label_count});
  std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(write_svg_totals_each_label_over_its_chunks_also_for_a_few_chunks) {
  // Few chunks (each drawn in its own colour), three of one label: the label's total is their sum,
  // from footprints: 112 + 208 + 304 = 624 bytes in use, three first blocks of 64 KiB held.
  perfloc::top_chunk top;
  perfloc::process_chunk a{top, "GET /items"}, b{top, "GET /items"}, c{top, "GET /items"}, other{top, "other"};
  a.allocate(100);
  b.allocate(200);
  c.allocate(300);
  other.allocate(50);
  const auto path = scratch_file("few.svg");
  perfloc::write_svg(top, path);
  BOOST_TEST(xml_errors(path) == "");
  auto totals_of = [&](const std::string& label) {
    const std::string total = "//*[@class='label total'][@data-label='" + label + "']";
    return xpath(path, "concat(count(" + total + "), ' ', sum(" + total + "/@data-chunks), ' ', sum(" + total +
                           "/@data-in-use), ' ', sum(" + total + "/@data-held))");
  };
  BOOST_TEST(totals_of("GET /items") == "1 3 624 " + std::to_string(3 * 64 * KiB));
  BOOST_TEST(totals_of("other") == "1 1 64 " + std::to_string(64 * KiB));
  std::filesystem::remove(path);
}

BOOST_AUTO_TEST_CASE(write_svg_replaces_the_file_whole) {
  // A dashboard that has the previous picture open keeps reading the previous picture, whole.
  perfloc::top_chunk top;
  perfloc::process_chunk chunk{top, "x"};
  const auto path = scratch_file("replace.svg");
  const std::string previous(100000, 'p');
  std::ofstream(path) << previous;
  std::ifstream reader(path);
  char first[10];
  reader.read(first, sizeof first);
  perfloc::write_svg(top, path);
  const std::string rest((std::istreambuf_iterator<char>(reader)), std::istreambuf_iterator<char>());
  BOOST_TEST((std::string(first, sizeof first) + rest == previous), "the previous picture was overwritten in place");
  BOOST_TEST(xml_errors(path) == "");
  std::filesystem::remove(path);
  std::size_t left_behind = 0;  // no temporary file stays beside it
  for (const auto& entry : std::filesystem::directory_iterator(path.parent_path()))
    left_behind += entry.path().filename().string().starts_with(path.filename().string());
  BOOST_TEST(left_behind == 0u);
}
