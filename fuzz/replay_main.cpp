// fuzz/replay_main.cpp — runs fuzz/perfloc_fuzz.cpp's LLVMFuzzerTestOneInput over files and directories,
// without libFuzzer: the seed corpus and every regression input become one CTest test in every build
// (debug, asan, tsan), so a crash the fuzzer once found stays fixed. Files whose names start with '.' or
// are README* are skipped.
//
// `perfloc_fuzz_replay --generate DIR N SEED` writes N seeded inputs into DIR (how fuzz/corpus/gen-* were
// made): each a few thousand bytes of operations drawn from one of several profiles (churn of small
// requests, sizes around block and span-class edges, objects made and destroyed, containers, moves and
// bad requests, the tiny top run out, chunks filled to the end of a block), laid out the way perfloc_fuzz.cpp's reader decodes them: an
// operation byte, then its argument bytes. The decoder's state (which slots are open, what is live) decides
// how many bytes an operation takes, so an input may drift from its plan; it stays a valid input, and the
// model checks whatever it decodes to. Same seed, same files, on any machine.
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool replay(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "perfloc_fuzz_replay: cannot read %s\n", file.c_str());
    return false;
  }
  const std::vector<char> bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  std::fprintf(stderr, "perfloc_fuzz_replay: %s (%zu bytes)\n", file.c_str(), bytes.size());
  LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  return true;
}

bool skipped(const std::filesystem::path& file) {
  const std::string name = file.filename().string();
  return name.starts_with('.') || name.starts_with("README");
}


// ------------------------------------------------------------------------------------------------------------
// --generate: seeded inputs for the corpus
// ------------------------------------------------------------------------------------------------------------

/// splitmix64: the same numbers from the same seed everywhere (std:: distributions are not portable).
class seeded {
 public:
  explicit seeded(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
  }
  std::uint8_t byte() { return static_cast<std::uint8_t>(next()); }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }

 private:
  std::uint64_t state_;
};

/// Operation codes as perfloc_fuzz.cpp's step() reads them (byte % 17).
enum op : std::uint8_t {
  open_chunk = 0, release = 2, allocate = 3, deallocate = 6, make = 8, destroy = 9, std_vector = 10,
  pmr_vector = 11, ref_vector = 12, inner_vector = 13, move = 14, bad_request = 15, object_graph = 16
};
inline constexpr unsigned op_count = 17;

struct profile {
  const char* name;
  std::array<unsigned, 13> weights;  // in the order of the ops above
  unsigned small_top_percent;        // chunks opened from the tiny top
  unsigned edge_size_percent;        // sizes around 16-byte classes, 512, 4096, 64 KiB, 256 KiB
};
constexpr op op_order[13] = {open_chunk, release,    allocate,   deallocate,   make, destroy,     std_vector,
                             pmr_vector, ref_vector, inner_vector, move, bad_request, object_graph};
constexpr profile profiles[] = {
    //                        open rel alloc free make destroy std pmr ref inner move bad graph
    {"churn",               {{ 3,  2,  30,  28,   4,   3,    1,  1,  1,   1,    1,  1,  1}}, 10, 20},
    {"edges",               {{ 3,  2,  30,  26,   2,   2,    1,  1,  1,   1,    1,  1,  1}}, 10, 80},
    {"objects",             {{ 3,  2,   8,   6,  30,  28,    2,  1,  6,   2,    2,  2, 10}}, 10, 20},
    {"containers",          {{ 3,  3,   6,   4,   4,   3,   18, 16, 14,  10,    3,  2,  2}}, 10, 20},
    {"scopes",              {{12, 10,  12,   8,   8,   6,    3,  3,  3,   3,   10,  6,  4}}, 20, 30},
    {"small_top",           {{ 6,  3,  30,  12,   8,   4,    6,  4,  3,   3,    2,  2,  3}}, 90, 40},
};

std::size_t edge_size(seeded& random) {
  static constexpr std::size_t edges[] = {1, 15, 16, 17, 31, 32, 33, 496, 511, 512, 513, 528, 1008, 1024, 1025,
                                          4080, 4095, 4096, 4097, 8192, 32768, 65472, 65536, 65537, 131072,
                                          262080, 262144, 262145, 524288};
  const std::size_t base = edges[random.below(std::size(edges))];
  const std::size_t jitter = random.below(3);
  return base + jitter - 1 > 0 ? base + jitter - 1 : base;
}

/// The bytes reader::size() turns into `bytes` (or close to it: one of its four buckets).
void put_size(std::vector<std::uint8_t>& out, std::size_t bytes) {
  if (bytes < 256) {
    out.push_back(0);  // bucket 0 (< 60): one byte
    out.push_back(static_cast<std::uint8_t>(bytes));
  } else if (bytes <= 4096) {
    out.push_back(60);  // bucket < 85: u16 % 4097
    out.push_back(static_cast<std::uint8_t>(bytes));
    out.push_back(static_cast<std::uint8_t>(bytes >> 8));
  } else if (bytes <= 65535) {
    out.push_back(85);  // bucket < 96: u16
    out.push_back(static_cast<std::uint8_t>(bytes));
    out.push_back(static_cast<std::uint8_t>(bytes >> 8));
  } else {
    const std::size_t sixteenths = std::min<std::size_t>(bytes >> 4, 65535);
    out.push_back(96);  // else: u16 << 4
    out.push_back(static_cast<std::uint8_t>(sixteenths));
    out.push_back(static_cast<std::uint8_t>(sixteenths >> 8));
  }
}

std::vector<std::uint8_t> generate_one(seeded& random, const profile& p, std::size_t length) {
  std::vector<std::uint8_t> out;
  unsigned total = 0;
  for (unsigned w : p.weights) total += w;
  while (out.size() < length) {
    unsigned pick = static_cast<unsigned>(random.below(total));
    std::size_t i = 0;
    while (pick >= p.weights[i]) pick -= p.weights[i++];
    const op o = op_order[i];
    out.push_back(static_cast<std::uint8_t>(o + op_count * random.below(256 / op_count)));
    if (o == open_chunk) {  // how: bit 0 the tiny top, bit 1 a label
      const bool small = random.below(100) < p.small_top_percent;
      out.push_back(static_cast<std::uint8_t>((random.byte() & ~1u) | (small ? 1u : 0u)));
      continue;
    }
    out.push_back(random.byte());  // which open chunk
    switch (o) {
      case allocate: {
        const std::size_t bytes = random.below(100) < p.edge_size_percent ? edge_size(random)
                                  : random.below(8) == 0                  ? random.below(40000)
                                                                          : random.below(256);
        put_size(out, bytes);
        // Alignment: below 150 the default, else 1 << (b % 13).
        out.push_back(random.below(3) == 0 ? static_cast<std::uint8_t>(150 + random.below(106)) : random.byte() % 150);
        break;
      }
      case std_vector: case pmr_vector: case ref_vector: case inner_vector:
        // what (bit 7 multiplies the growth by 16 or 64: now and then, the model checks every element of
        // every container after each step), which, how many
        out.push_back(static_cast<std::uint8_t>(random.byte() & (random.below(8) == 0 ? 0xff : 0x7f)));
        out.push_back(random.byte());
        out.push_back(static_cast<std::uint8_t>(random.below(64)));
        break;
      default:
        out.push_back(random.byte());
        out.push_back(random.byte());
    }
  }
  return out;
}

/// Chunks filled to the end of their first 64 KiB block with requests of one footprint f (32 to 256 bytes)
/// and sizes from f - 15 to f: a big request first, then up to 255 small ones (the model keeps at most 256
/// raw allocations per chunk), then a few more that must go to a new block. A block's room is a multiple
/// of 64, so with f <= 64 the last request of the run fits the block exactly.
std::vector<std::uint8_t> generate_block_ends(seeded& random, std::size_t length) {
  std::vector<std::uint8_t> out;
  auto allocate_bytes = [&](std::size_t bytes) {
    out.push_back(allocate);
    out.push_back(0);  // the only open chunk
    put_size(out, bytes);
    out.push_back(0);  // the default alignment
  };
  while (out.size() < length) {
    out.push_back(open_chunk);
    out.push_back(static_cast<std::uint8_t>(random.byte() & ~1u));  // from default_top()
    const std::size_t footprint = std::size_t{32} << random.below(4);
    allocate_bytes((65100 - 240 * footprint) & ~std::size_t{255});
    const std::size_t bytes = footprint - random.below(16);
    for (int i = 0; i < 255; ++i) allocate_bytes(bytes);
    for (int i = 0; i < 3; ++i) allocate_bytes(1 + random.below(64));
    out.push_back(release);
    out.push_back(0);
    out.push_back(random.byte());
  }
  return out;
}

int generate(const std::filesystem::path& dir, std::size_t count, std::uint64_t seed) {
  std::filesystem::create_directories(dir);
  seeded random(seed);
  for (std::size_t n = 0; n < count; ++n) {
    const std::size_t kind = n % (std::size(profiles) + 1);
    const std::size_t length = 800 + random.below(1700);
    const std::vector<std::uint8_t> bytes = kind < std::size(profiles) ? generate_one(random, profiles[kind], length)
                                                                       : generate_block_ends(random, length);
    char name[96];
    std::snprintf(name, sizeof name, "gen-%llu-%04zu-%s", static_cast<unsigned long long>(seed), n,
                  kind < std::size(profiles) ? profiles[kind].name : "block_ends");
    std::ofstream file(dir / name, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!file) {
      std::fprintf(stderr, "perfloc_fuzz_replay: cannot write %s\n", (dir / name).c_str());
      return 1;
    }
  }
  std::printf("perfloc_fuzz_replay: wrote %zu input(s) into %s\n", count, dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--generate") {
    if (argc != 5) {
      std::fprintf(stderr, "usage: perfloc_fuzz_replay --generate DIR COUNT SEED\n");
      return 2;
    }
    return generate(argv[2], std::strtoull(argv[3], nullptr, 10), std::strtoull(argv[4], nullptr, 10));
  }
  std::size_t replayed = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg = argv[i];
    std::vector<std::filesystem::path> files;
    if (std::filesystem::is_directory(arg)) {
      for (const auto& entry : std::filesystem::directory_iterator(arg))
        if (entry.is_regular_file() && !skipped(entry.path())) files.push_back(entry.path());
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(arg);
    }
    for (const auto& file : files) {
      if (!replay(file)) return 1;
      ++replayed;
    }
  }
  std::printf("perfloc_fuzz_replay: %zu input(s) replayed, every check held\n", replayed);
  return replayed ? 0 : 1;
}
