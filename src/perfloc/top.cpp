// src/perfloc/top.cpp — default_top(): the process-wide top chunk.
module;

#include <atomic>

#include "perfloc/detail/arena.hpp"

module perfloc.top;

namespace perfloc {

top_chunk& default_top() {
  // Leaked on purpose: threads, coroutines and static destructors may release chunks after main returns.
  static top_chunk* const instance = [] {
    auto* top = new top_chunk{top_options{}};
    detail::default_top_state.store(state_of(*top), std::memory_order_release);
    return top;
  }();
  return *instance;
}

}  // namespace perfloc
