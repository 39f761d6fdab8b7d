// tests/perfloc/tags.hpp — tagged chunks for tests where threads fill one top at once: each chunk's memory
// holds a tag no other chunk of the fill has, so a block or region handed to two chunks shows as a tag
// overwritten.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace perfloc_test {

/// The tag of a thread's `index`-th chunk (from 1) of a round: unique for threads < 16, rounds < 2^20 and
/// indexes < 256.
inline std::uint32_t tag_of(std::uint32_t thread, std::uint32_t round, std::size_t index) {
  return thread << 28 | round << 8 | static_cast<std::uint32_t>(index);
}

/// Tags the `words` words at p as the thread's `index`-th chunk of the round.
inline void write_tag(std::uint32_t* p, std::size_t words, std::uint32_t thread, std::uint32_t round, std::size_t index) {
  std::fill_n(p, words, tag_of(thread, round, index));
}

/// How many of a round's tagged chunks (tagged[i] is chunk i + 1) no longer hold their tag whole.
inline int overwritten_tags(const std::vector<std::uint32_t*>& tagged, std::size_t words, std::uint32_t thread,
                            std::uint32_t round) {
  int overwritten = 0;
  for (std::size_t i = 0; i < tagged.size(); ++i)
    if (std::count(tagged[i], tagged[i] + words, tag_of(thread, round, i + 1)) != static_cast<std::ptrdiff_t>(words))
      ++overwritten;
  return overwritten;
}

}  // namespace perfloc_test
