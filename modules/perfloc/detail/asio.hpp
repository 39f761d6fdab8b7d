// perfloc/detail/asio.hpp — the global module fragment of every perfloc.asio unit: which Asio (Boost.Asio or
// standalone Asio), its version check, and the standard and Asio headers the units use.
//
// Every unit of perfloc.asio (modules/perfloc/asio.cppm and its partitions in modules/perfloc/asio/) includes
// this file and nothing else from Asio, so the choice is made in one place. The build defines
// PERFLOC_STANDALONE_ASIO (CMake variable of the same name: a directory holding asio.hpp) for standalone Asio,
// namespace ::asio; otherwise Boost.Asio, namespace boost::asio. Inside perfloc the namespace is
// perfloc::detail::asio either way, and PERFLOC_ASIO_VERSION is ASIO_VERSION or BOOST_ASIO_VERSION. The
// differences between Asio versions are in perfloc.asio:shims. Internal, never exported.
#pragma once

#include <atomic>
#include <bit>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <source_location>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#if defined(PERFLOC_STANDALONE_ASIO)
#include <asio/version.hpp>
#define PERFLOC_ASIO_VERSION ASIO_VERSION
#else
#include <boost/asio/version.hpp>
#define PERFLOC_ASIO_VERSION BOOST_ASIO_VERSION
#endif

// Each version in the range is checked by the `asio-versions` tests (tests/asio_versions.cmake).
static_assert(PERFLOC_ASIO_VERSION >= 102600 && PERFLOC_ASIO_VERSION < 103900,
              "perfloc.asio supports Asio 1.26 to 1.38 (Boost 1.81 to 1.90, or standalone Asio): it is built on "
              "Asio internals (awaitable_frame, awaitable_thread, awaitable_handler, the co_spawn helpers), which "
              "perfloc.asio:shims (modules/perfloc/asio/shims.cppm) adapts per version. This Asio is outside "
              "that range: port the shims to it first.");

#if defined(PERFLOC_STANDALONE_ASIO)
#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/associator.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_state.hpp>
#include <asio/co_spawn.hpp>
#include <asio/dispatch.hpp>
#include <asio/execution.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/system_executor.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
namespace perfloc::detail {
namespace asio = ::asio;
using asio_error_code = std::error_code;
}  // namespace perfloc::detail
// Asio's detail namespace, for definitions that argument-dependent lookup must find there (perfloc.asio:shims);
// `namespace asio::detail {` also reopens it inside Asio 1.38.1's optional inline version namespace.
#define PERFLOC_ASIO_DETAIL_NAMESPACE asio::detail
#else
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/associator.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/system_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
namespace perfloc::detail {
namespace asio = boost::asio;
using asio_error_code = boost::system::error_code;
}  // namespace perfloc::detail
#define PERFLOC_ASIO_DETAIL_NAMESPACE boost::asio::detail
#endif

namespace perfloc::detail {
namespace asio_detail = asio::detail;
}  // namespace perfloc::detail
