// bench/which_asio.hpp — the Asio that perfloc.asio is built on, for the Asio benchmarks (asio_bench.cpp,
// idle.hpp): perfloc/detail/asio.hpp chooses Boost.Asio, or standalone Asio when the build defines
// PERFLOC_STANDALONE_ASIO (`tools/dev bench --asio-versions` builds one per standalone Asio), so the same
// source measures each. Names it `perfloc_bench::asio`; adds the headers the benchmarks use beyond perfloc's.
#pragma once

#include "perfloc/detail/asio.hpp"

#if defined(PERFLOC_STANDALONE_ASIO)
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>
#else
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#endif

#include <string>

namespace perfloc_bench {

namespace asio = perfloc::detail::asio;

/// "1.28.2": the Asio version the benchmarks run against.
inline std::string asio_version() {
  return std::to_string(PERFLOC_ASIO_VERSION / 100000) + "." + std::to_string(PERFLOC_ASIO_VERSION / 100 % 1000) +
         "." + std::to_string(PERFLOC_ASIO_VERSION % 100);
}

}  // namespace perfloc_bench
