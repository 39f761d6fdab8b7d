// perfloc/detail/asio.hpp — the global module fragment of every perfloc.asio unit: the standard headers and
// the Asio headers they use, and the check of the Asio version perfloc.asio is built on.
//
// Every unit of perfloc.asio (modules/perfloc/asio.cppm and its partitions in modules/perfloc/asio/) includes
// this file and nothing else from Asio, so the choice of Asio is made in one place. Internal, never exported.
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

#include <boost/asio/version.hpp>

static_assert(BOOST_ASIO_VERSION == 102600,
              "perfloc.asio is built on Boost.Asio 1.26 (Boost 1.81) internals: awaitable_frame, awaitable_thread, "
              "awaitable_handler and the co_spawn entry point. This Boost has another Asio version; perfloc.asio "
              "must be ported to it (see the comment at the top of modules/perfloc/asio.cppm) before it is used.");

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
namespace asio_detail = boost::asio::detail;
}  // namespace perfloc::detail
