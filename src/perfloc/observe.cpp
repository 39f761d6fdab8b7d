// src/perfloc/observe.cpp — what a person reads about a top chunk: report() as text, write_svg() as a map.
//
// Both work from snapshots (detail::live_chunks, detail::snapshot) taken under the top's mutex without
// stopping the threads that open and release chunks, then format outside it.
module;

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <system_error>
#include <vector>

#include "perfloc/detail/arena.hpp"

module perfloc.top;

namespace perfloc {
namespace {

std::string format(const char* pattern, auto... values) {
  char buffer[512];
  const int n = std::snprintf(buffer, sizeof buffer, pattern, values...);
  return std::string(buffer, static_cast<std::size_t>(std::clamp(n, 0, static_cast<int>(sizeof buffer) - 1)));
}

std::string bytes_text(std::size_t bytes) {
  if (bytes >= (std::size_t{1} << 30)) return format("%.1f GiB", static_cast<double>(bytes) / (1 << 30));
  if (bytes >= (std::size_t{1} << 20)) return format("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  if (bytes >= (std::size_t{1} << 10)) return format("%.1f KiB", static_cast<double>(bytes) / (1 << 10));
  return format("%zu B", bytes);
}

std::string label_text(const char* label) { return label[0] ? label : "(no label)"; }

/// For text content (never used inside attributes): &, < and > only.
std::string xml_escaped(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      default: out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
    }
  }
  return out;
}

/// A colour per live chunk, evenly spread around the hue circle in the order of the legend.
std::string chunk_colour(std::size_t index, std::size_t count) {
  return format("hsl(%zu, 70%%, 55%%)", (index * 360 / std::max<std::size_t>(count, 1) + 200) % 360);
}

}  // namespace

std::string report(const top_chunk& top) {
  const top_stats totals = top.stats();
  const std::vector<detail::chunk_figures> chunks = detail::live_chunks(top.state_);
  struct group {
    std::size_t chunks = 0, in_use = 0, peak = 0, held = 0;
    std::uint64_t made = 0, destroyed = 0;
  };
  std::map<std::string, group> by_label;
  for (const detail::chunk_figures& c : chunks) {
    group& g = by_label[label_text(c.label)];
    ++g.chunks;
    g.in_use += c.in_use_bytes;
    g.peak = std::max(g.peak, c.peak_in_use_bytes);
    g.held += c.held_bytes;
    g.made += c.objects_made;
    g.destroyed += c.objects_destroyed;
  }
  std::string text = format("perfloc top chunk: %llu live chunks, %s in use, %s committed (peak %s), %s reserved\n",
                            static_cast<unsigned long long>(totals.live_chunks), bytes_text(totals.in_use_bytes).c_str(),
                            bytes_text(totals.committed_bytes).c_str(), bytes_text(totals.peak_committed_bytes).c_str(),
                            bytes_text(totals.reserved_bytes).c_str());
  if (!by_label.empty())
    text += format("  %-32s %6s %12s %12s %12s %10s %10s\n", "label", "chunks", "in use", "peak", "held", "made",
                   "destroyed");
  for (const auto& [label, g] : by_label)
    text += format("  %-32s %6zu %12s %12s %12s %10llu %10llu\n", label.c_str(), g.chunks, bytes_text(g.in_use).c_str(),
                   bytes_text(g.peak).c_str(), bytes_text(g.held).c_str(), static_cast<unsigned long long>(g.made),
                   static_cast<unsigned long long>(g.destroyed));
  return text;
}

void write_svg(const top_chunk& top, const std::filesystem::path& path) {
  const detail::top_snapshot shot = detail::snapshot(top.state_);
  const top_stats totals = top.stats();

  // Blocks are laid out in address order, 64 cells of 64 KiB to a row; reserved address space that is
  // not used yet (the rest of the meta region, the rest of a reservation) is one dashed strip instead.
  constexpr int cell = 12, cells_per_row = 64, left = 20, top_margin = 78;
  std::map<const detail::child_meta*, std::size_t> colour_of;
  for (std::size_t i = 0; i < shot.chunks.size(); ++i) colour_of[shot.chunks[i].identity] = i;

  std::string body;
  int y = top_margin;
  std::size_t drawn_blocks = 0;
  for (std::size_t r = 0; r < shot.reservation_bytes.size(); ++r) {
    body += format("<text x='%d' y='%d' class='h'>reservation %zu: %s</text>\n", left, y - 6, r,
                   bytes_text(shot.reservation_bytes[r]).c_str());
    std::size_t column = 0;  // the next free cell of the current row
    for (const detail::block_view& b : shot.blocks) {
      if (b.reservation != r) continue;
      if (b.kind == detail::block_view::unused) {
        if (column) y += cell, column = 0;
        body += format("<rect x='%d' y='%d' width='%d' height='%d' class='unused'/>"
                       "<text x='%d' y='%d' class='s'>%s reserved, not used yet</text>\n",
                       left, y + 2, cells_per_row * cell, cell, left + 4, y + cell, bytes_text(b.bytes).c_str());
        y += cell + 6;
        continue;
      }
      std::string fill, title;
      switch (b.kind) {
        case detail::block_view::top_header: fill = "#555"; title = "top chunk header"; break;
        case detail::block_view::meta_region: fill = "#888"; title = "meta region in use: children meta list, thread caches"; break;
        case detail::block_view::in_chunk: {
          const std::size_t index = colour_of.count(b.owner) ? colour_of[b.owner] : 0;
          fill = chunk_colour(index, shot.chunks.size());
          title = "chunk '" + label_text(index < shot.chunks.size() ? shot.chunks[index].label : "") + "'";
          break;
        }
        case detail::block_view::cached: fill = "#9cc"; title = "free, in a thread cache"; break;
        case detail::block_view::free_committed: fill = "#cde8c4"; title = "free in the top chunk, committed"; break;
        case detail::block_view::free_decommitted: fill = "#fff"; title = "free, given back to the OS"; break;
        case detail::block_view::unused: break;
      }
      ++drawn_blocks;  // numbers the block: a block that spans rows is drawn as several rectangles
      for (std::size_t cells = std::max<std::size_t>(b.bytes / detail::granule_bytes, 1); cells;) {
        const std::size_t span = std::min<std::size_t>(cells_per_row - column, cells);
        body += format("<rect x='%zu' y='%d' width='%zu' height='%d' fill='%s' class='b' data-block='%zu'>"
                       "<title>%s, %s</title></rect>\n",
                       left + column * cell, y, span * cell, cell, fill.c_str(), drawn_blocks,
                       xml_escaped(title).c_str(), bytes_text(b.bytes).c_str());
        cells -= span;
        column += span;
        if (column == cells_per_row) y += cell, column = 0;
      }
    }
    if (column) y += cell;
    y += 40;
  }

  // Legend: the kinds, then one line per live chunk with its figures.
  std::string legend;
  int ly = top_margin;
  const int lx = left + cells_per_row * cell + 30;
  const struct { const char* fill; const char* text; } kinds[] = {
      {"#555", "top chunk header"}, {"#888", "meta region in use (children meta list, thread caches)"},
      {"#9cc", "free block in a thread cache"}, {"#cde8c4", "free block in the top chunk, committed"},
      {"#fff", "free block given back to the OS"}};
  for (const auto& k : kinds) {
    legend += format("<rect x='%d' y='%d' width='%d' height='%d' fill='%s' class='b'/><text x='%d' y='%d' class='s'>%s</text>\n",
                     lx, ly, cell, cell, k.fill, lx + cell + 6, ly + cell - 2, k.text);
    ly += cell + 6;
  }
  ly += 10;
  legend += format("<text x='%d' y='%d' class='h'>%zu live chunks</text>\n", lx, ly, shot.chunks.size());
  ly += 8;
  for (std::size_t i = 0; i < shot.chunks.size() && i < 40; ++i) {
    const detail::chunk_figures& c = shot.chunks[i];
    legend += format("<rect x='%d' y='%d' width='%d' height='%d' fill='%s' class='b'/><text x='%d' y='%d' class='s'>%s: "
                     "%s in use (peak %s), %s in %u block(s), %llu objects alive</text>\n",
                     lx, ly, cell, cell, chunk_colour(i, shot.chunks.size()).c_str(), lx + cell + 6, ly + cell - 2,
                     xml_escaped(label_text(c.label)).c_str(), bytes_text(c.in_use_bytes).c_str(),
                     bytes_text(c.peak_in_use_bytes).c_str(), bytes_text(c.held_bytes).c_str(), c.blocks,
                     static_cast<unsigned long long>(c.objects_made - c.objects_destroyed));
    ly += cell + 6;
  }
  if (shot.chunks.size() > 40) legend += format("<text x='%d' y='%d' class='s'>... and %zu more</text>\n", lx, ly + 10, shot.chunks.size() - 40);

  const int width = lx + 520, height = std::max(y, ly + 40) + 20;
  std::string svg = format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d' data-blocks='%zu'>\n"
      "<style>text{font-family:sans-serif} .h{font-size:14px;font-weight:bold} .s{font-size:11px} "
      ".b{stroke:#333;stroke-width:0.5} .unused{fill:#f4f4f4;stroke:#ccc;stroke-dasharray:3 2}</style>\n"
      "<rect width='100%%' height='100%%' fill='white'/>\n",
      width, height, width, height, drawn_blocks);
  svg += format("<text x='%d' y='24' class='h'>perfloc top chunk: %llu live chunks, %s in use, %s committed, %s reserved</text>\n",
                left, static_cast<unsigned long long>(totals.live_chunks), bytes_text(totals.in_use_bytes).c_str(),
                bytes_text(totals.committed_bytes).c_str(), bytes_text(totals.reserved_bytes).c_str());
  svg += format("<text x='%d' y='42' class='s'>one cell = 64 KiB of address space, in address order</text>\n", left);
  svg += body + legend + "</svg>\n";

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw std::system_error(errno ? errno : EIO, std::generic_category(), "perfloc::write_svg: " + path.string());
  out << svg;
  if (!out.flush()) throw std::system_error(EIO, std::generic_category(), "perfloc::write_svg: " + path.string());
}

}  // namespace perfloc
