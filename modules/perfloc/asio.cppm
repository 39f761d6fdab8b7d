// perfloc.asio — every Asio coroutine and task gets its own process chunk, released when its frame completes.
//
// The only module that includes Asio, through perfloc/detail/asio.hpp (which Asio, and the version check).
// One partition per concern, in modules/perfloc/asio/:
//
//   :memory    operation memory (use_chunk's: from the coroutine's chunk and back), the chunk's lock, the spawn state
//   :executor  the executor types reached behind any_io_executor (perfloc's own launches and completions)
//   :shims     the Asio internals reached into (the awaitable frame's thread and coroutine, promises derived
//              from Asio's, which threads perfloc started, frame-less awaiters)
//   :entry     the entry frame opening the chunk; finding the chunk: use_chunk, this_coro::chunk()
//   :spawn     perfloc::co_spawn, Asio 1.38's co_spawn ported onto those internals
//   :post      perfloc::post
//   :frames    asio::awaitable frames (and any coroutine's, with chunk_frame_allocation) in a chunk
//
// Each partition opens with its design; the evidence for each choice is in the closing notes of issue 4.
export module perfloc.asio;

export import :memory;
export import :executor;
export import :shims;
export import :entry;
export import :spawn;
export import :post;
export import :frames;
