// src/perfloc/observe.cpp — what a person reads about a top chunk: report() as text, write_svg() as a map.
//
// Each works from one snapshot (detail::live_chunks, detail::snapshot): taken under the top's mutex without
// stopping the threads that open and release chunks, its vectors reserved before the lock is taken, each
// chunk read whole (the meta's seqlock). Totals and rows come from the same walk, so they add up. The
// formatting happens after the lock is released.
module;

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <map>
#include <string>
#include <system_error>
#include <unordered_map>
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

/// The columns a label takes in a terminal: its code points (labels are valid UTF-8, see copy_label; a
/// double-width character counts as one).
std::size_t columns(const std::string& text) {
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

/// `text` with each byte that `escape` names (a table: byte, replacement) replaced, and each other control
/// character by `control(byte)`.
std::string escaped(const std::string& text, std::initializer_list<std::pair<char, const char*>> escape,
                    std::string (*control)(unsigned char)) {
  std::string out;
  for (const char c : text) {
    const auto* named = std::find_if(escape.begin(), escape.end(), [c](const auto& e) { return e.first == c; });
    if (named != escape.end()) out += named->second;
    else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) out += control(static_cast<unsigned char>(c));
    else out += c;
  }
  return out;
}

/// A label as report() shows it: in double quotes with C escapes, so that every label is one line and
/// none reads like another; unlabelled chunks are "(no label)", unquoted.
std::string shown_label(const std::string& label) {
  if (label.empty()) return "(no label)";
  return "\"" +
         escaped(label, {{'"', "\\\""}, {'\\', "\\\\"}, {'\n', "\\n"}, {'\t', "\\t"}, {'\r', "\\r"}},
                 [](unsigned char c) { return format("\\x%02x", c); }) +
         "\"";
}

/// For XML text and attribute values. Labels are valid UTF-8 already; control characters XML 1.0 does not
/// allow become U+FFFD, the ones it allows are character references (kept as they are in attributes).
std::string xml_escaped(const std::string& text) {
  return escaped(text,
                 {{'&', "&amp;"}, {'<', "&lt;"}, {'>', "&gt;"}, {'\'', "&apos;"}, {'"', "&quot;"}, {'\t', "&#9;"},
                  {'\n', "&#10;"}, {'\r', "&#13;"}},
                 [](unsigned char c) { return std::string(c == 0x7F ? "\x7F" : "\xEF\xBF\xBD"); });
}

/// Colours evenly spread around the hue circle, in hundredths of a degree (whole degrees would give
/// thousands of labels only 360 colours, and neighbours the same one).
std::string hue_colour(std::size_t index, std::size_t count) {
  const double hue = std::fmod(static_cast<double>(index) * 360.0 / static_cast<double>(std::max<std::size_t>(count, 1)) + 200.0, 360.0);
  return format("hsl(%.2f,70%%,55%%)", hue);
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// report()
// ---------------------------------------------------------------------------------------------------------

std::string report(const top_chunk& top) {
  const detail::live_view live = detail::live_chunks(top.state_);
  struct group {
    std::size_t chunks = 0, in_use = 0, max_peak = 0, held = 0;
    std::uint64_t made = 0, destroyed = 0;
  };
  std::map<std::string, group> by_label;  // by the label as kept: "" is no label, "(no label)" is a label
  for (const detail::chunk_figures& c : live.chunks) {
    group& g = by_label[c.label];
    ++g.chunks;
    g.in_use += c.in_use_bytes;
    g.max_peak = std::max(g.max_peak, c.peak_in_use_bytes);
    g.held += c.held_bytes;
    g.made += c.objects_made;
    g.destroyed += c.objects_destroyed;
  }
  const detail::top_totals& totals = live.totals;
  std::string text = format("perfloc top chunk: %llu live chunks, %s in use, %s committed (peak %s), %s reserved\n",
                            static_cast<unsigned long long>(totals.live_chunks), bytes_text(totals.in_use_bytes).c_str(),
                            bytes_text(totals.committed_bytes).c_str(), bytes_text(totals.peak_committed_bytes).c_str(),
                            bytes_text(totals.reserved_bytes).c_str());
  if (by_label.empty()) return text;

  std::vector<std::string> shown;
  std::size_t width = columns("label");
  for (const auto& entry : by_label) {
    shown.push_back(shown_label(entry.first));
    width = std::max(width, columns(shown.back()));
  }
  auto padded = [width](const std::string& label) { return label + std::string(width - columns(label), ' '); };
  text += "  " + padded("label") +
          format(" %6s %12s %12s %12s %10s %10s\n", "chunks", "in use", "max peak", "held", "made", "destroyed");
  std::size_t row = 0;
  for (const auto& [label, g] : by_label)
    text += "  " + padded(shown[row++]) +
            format(" %6zu %12s %12s %12s %10llu %10llu\n", g.chunks, bytes_text(g.in_use).c_str(),
                   bytes_text(g.max_peak).c_str(), bytes_text(g.held).c_str(),
                   static_cast<unsigned long long>(g.made), static_cast<unsigned long long>(g.destroyed));
  return text;
}

// ---------------------------------------------------------------------------------------------------------
// write_svg()
// ---------------------------------------------------------------------------------------------------------

namespace {

/// What a block or a cell is painted as.
struct paint {
  std::string kind;   ///< data-kind: "top header", "meta region", "chunk", "thread cache", "free", ...
  std::string label;  ///< data-label, for a chunk
  std::string fill;
  std::string title;  ///< what a viewer shows on hover
};

/// Writes `svg` beside `path` and renames it over `path`: a reader has the old file or the new one.
void replace_file(const std::filesystem::path& path, const std::string& svg) {
  static std::atomic<unsigned> serial{0};
  const std::filesystem::path temporary =
      path.string() + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(serial.fetch_add(1));
  auto fail = [&](std::error_code error) {
    std::error_code ignored;
    std::filesystem::remove(temporary, ignored);
    throw std::system_error(error, "perfloc::write_svg: " + path.string());
  };
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    if (!out) fail(std::error_code(errno ? errno : EIO, std::generic_category()));
    out << svg;
    if (!out.flush()) fail(std::error_code(EIO, std::generic_category()));
  }
  std::error_code error;
  std::filesystem::rename(temporary, path, error);
  if (error) fail(error);
}

}  // namespace

void write_svg(const top_chunk& top, const std::filesystem::path& path) {
  const detail::top_snapshot shot = detail::snapshot(top.state_);
  const detail::top_totals& totals = shot.totals;

  // Totals per label, each label its colour; up to 40 live chunks, each chunk has its own colour instead.
  struct label_total {
    std::size_t chunks = 0, in_use = 0, held = 0;
    std::string colour;
    std::size_t paint = 0;  // in paints, below
  };
  std::map<std::string, label_total> labels;
  for (const detail::chunk_figures& c : shot.chunks) {
    label_total& l = labels[c.label];
    ++l.chunks;
    l.in_use += c.in_use_bytes;
    l.held += c.held_bytes;
  }
  std::size_t label_index = 0;
  for (auto& entry : labels) entry.second.colour = hue_colour(label_index++, labels.size());
  constexpr std::size_t chunks_in_legend = 40;
  const bool colour_per_chunk = shot.chunks.size() <= chunks_in_legend;

  // What blocks are painted as: first each kind of block_view (in its order; in_chunk stands for a chunk
  // opened between the walk and the reading of the block map), then each chunk's or each label's.
  std::vector<paint> paints = {{"top header", "", "#555", "top chunk header"},
                               {"meta region", "", "#888", "meta region in use: children meta list, thread caches"},
                               {"chunk opened meanwhile", "", "#bbb", "a chunk opened while the picture was taken"},
                               {"thread cache", "", "#9cc", "free, in a thread cache"},
                               {"free", "", "#cde8c4", "free in the top chunk, committed"},
                               {"free, decommitted", "", "#fff", "free, given back to the OS"},
                               {"unused", "", "#f4f4f4", "reserved, not used yet"}};
  auto chunk_paint = [](const std::string& label, std::string fill) {
    return paint{"chunk", label, std::move(fill), "chunk '" + (label.empty() ? std::string("(no label)") : label) + "'"};
  };
  std::vector<std::size_t> paint_of_chunk(shot.chunks.size());
  std::unordered_map<const detail::child_meta*, std::size_t> chunk_index;  // identity -> index in shot.chunks
  chunk_index.reserve(shot.chunks.size());
  for (auto& [label, l] : labels) {
    l.paint = paints.size();
    if (!colour_per_chunk) paints.push_back(chunk_paint(label, l.colour));
  }
  for (std::size_t i = 0; i < shot.chunks.size(); ++i) {
    chunk_index.emplace(shot.chunks[i].identity, i);
    if (colour_per_chunk) {
      paint_of_chunk[i] = paints.size();
      paints.push_back(chunk_paint(shot.chunks[i].label, hue_colour(i, shot.chunks.size())));
    } else {
      paint_of_chunk[i] = labels.find(shot.chunks[i].label)->second.paint;
    }
  }
  auto paint_of = [&](const detail::block_view& b) -> std::size_t {
    if (b.kind != detail::block_view::in_chunk) return b.kind;
    const auto found = chunk_index.find(b.owner);
    return found == chunk_index.end() ? std::size_t{detail::block_view::in_chunk} : paint_of_chunk[found->second];
  };

  // Cells of 64 KiB in address order, 64 to a row; past 1024 cells, bigger cells (a power of two of 64 KiB)
  // painted as what holds most of each, so the file stays small at any number of chunks. Reserved space
  // not used yet (the rest of the meta region, the rest of a reservation) is one dashed strip instead.
  constexpr int cell = 12, cells_per_row = 64, left = 20, top_margin = 78;
  constexpr std::size_t max_cells = 1024;
  std::size_t drawn_bytes = 0;
  for (const detail::block_view& b : shot.blocks)
    if (b.kind != detail::block_view::unused) drawn_bytes += b.bytes;
  std::size_t cell_bytes = detail::granule_bytes;
  while (drawn_bytes / cell_bytes > max_cells) cell_bytes *= 2;
  const bool one_block_per_run = cell_bytes == detail::granule_bytes;

  std::string body;
  int y = top_margin;
  std::size_t column = 0;  // the next free cell of the current row
  auto draw_run = [&](std::size_t paint_index, std::size_t cells, std::size_t bytes) {
    const paint& p = paints[paint_index];
    body += format("<g class='%s' data-kind='%s'", one_block_per_run ? "block" : "cells", p.kind.c_str());
    if (p.kind == "chunk") body += " data-label='" + xml_escaped(p.label) + "'";
    body += format(" data-bytes='%zu' fill='%s'>", bytes, p.fill.c_str());
    if (one_block_per_run) body += "<title>" + xml_escaped(p.title) + ", " + bytes_text(bytes) + "</title>";
    while (cells) {
      const std::size_t span = std::min<std::size_t>(cells_per_row - column, cells);
      body += format("<rect x='%zu' y='%d' width='%zu' height='%d' class='b'/>", left + column * cell, y, span * cell, cell);
      cells -= span;
      column += span;
      if (column == cells_per_row) y += cell, column = 0;
    }
    body += "</g>\n";
  };
  // A part of a slab (a 64 KiB block cut into small first regions): a slice of one cell, as wide as its share.
  std::size_t cell_part_filled = 0;
  auto draw_part = [&](std::size_t paint_index, std::size_t bytes) {
    const paint& p = paints[paint_index];
    body += format("<g class='block' data-kind='%s'", p.kind.c_str());
    if (p.kind == "chunk") body += " data-label='" + xml_escaped(p.label) + "'";
    body += format(" data-bytes='%zu' fill='%s'><title>", bytes, p.fill.c_str()) + xml_escaped(p.title) + ", " +
            bytes_text(bytes) + "</title>";
    const double x = left + column * cell + double(cell) * cell_part_filled / detail::granule_bytes;
    body += format("<rect x='%.2f' y='%d' width='%.2f' height='%d' class='p'/></g>\n", x, y,
                   double(cell) * bytes / detail::granule_bytes, cell);
    cell_part_filled += bytes;
    if (cell_part_filled < detail::granule_bytes) return;
    cell_part_filled = 0;
    if (++column == cells_per_row) y += cell, column = 0;
  };

  for (std::size_t r = 0; r < shot.reservation_bytes.size(); ++r) {
    body += format("<text x='%d' y='%d' class='h'>reservation %zu: %s</text>\n", left, y - 6, r,
                   bytes_text(shot.reservation_bytes[r]).c_str());
    column = 0;
    // Coarse cells: the bytes of each paint in the cell being filled, and the run of equal cells before it.
    std::vector<std::pair<std::size_t, std::size_t>> cell_share;  // paint, bytes: the few in one cell
    std::size_t cell_filled = 0, run_paint = 0, run_cells = 0, run_bytes = 0;
    auto flush_run = [&] {
      if (run_cells) draw_run(run_paint, run_cells, run_bytes);
      run_cells = run_bytes = 0;
    };
    auto close_cell = [&] {
      if (!cell_filled) return;
      const std::size_t dominant =
          std::max_element(cell_share.begin(), cell_share.end(), [](auto& a, auto& b) { return a.second < b.second; })
              ->first;
      if (run_cells && dominant != run_paint) flush_run();
      run_paint = dominant;
      ++run_cells;
      run_bytes += cell_filled;
      cell_share.clear();
      cell_filled = 0;
    };
    for (const detail::block_view& b : shot.blocks) {
      if (b.reservation != r) continue;
      if (b.kind == detail::block_view::unused) {
        close_cell();
        flush_run();
        if (column) y += cell, column = 0;
        body += format("<g class='block' data-kind='unused' data-bytes='%zu'><rect x='%d' y='%d' width='%d' "
                       "height='%d' class='unused'/><text x='%d' y='%d' class='s'>%s reserved, not used yet</text></g>\n",
                       b.bytes, left, y + 2, cells_per_row * cell, cell, left + 4, y + cell, bytes_text(b.bytes).c_str());
        y += cell + 6;
        continue;
      }
      const std::size_t p = paint_of(b);
      if (one_block_per_run) {
        if (b.bytes < detail::granule_bytes || cell_part_filled) draw_part(p, b.bytes);
        else draw_run(p, b.bytes / detail::granule_bytes, b.bytes);
        continue;
      }
      for (std::size_t left_over = b.bytes; left_over;) {
        const std::size_t take = std::min(left_over, cell_bytes - cell_filled);
        auto share = std::find_if(cell_share.begin(), cell_share.end(), [p](auto& s) { return s.first == p; });
        if (share == cell_share.end()) share = cell_share.insert(share, {p, 0});
        share->second += take;
        cell_filled += take;
        left_over -= take;
        if (cell_filled == cell_bytes) close_cell();
      }
    }
    close_cell();
    flush_run();
    if (column) y += cell;
    y += 40;
  }

  // Legend: the kinds, the live chunks (up to 40), then the totals of each label (the largest 500).
  std::string legend;
  int ly = top_margin;
  const int lx = left + cells_per_row * cell + 30;
  const struct {
    const char* fill;
    const char* text;
  } kinds[] = {{"#555", "top chunk header"},
               {"#888", "meta region in use (children meta list, thread caches)"},
               {"#9cc", "free block in a thread cache"},
               {"#cde8c4", "free block in the top chunk, committed"},
               {"#fff", "free block given back to the OS"}};
  for (const auto& k : kinds) {
    legend += format("<rect x='%d' y='%d' width='%d' height='%d' fill='%s' class='b'/><text x='%d' y='%d' class='s'>%s</text>\n",
                     lx, ly, cell, cell, k.fill, lx + cell + 6, ly + cell - 2, k.text);
    ly += cell + 6;
  }
  ly += 10;
  legend += format("<text x='%d' y='%d' class='h'>%zu live chunks</text>\n", lx, ly, shot.chunks.size());
  ly += 8;
  if (colour_per_chunk) {
    for (std::size_t i = 0; i < shot.chunks.size(); ++i) {
      const detail::chunk_figures& c = shot.chunks[i];
      legend += format("<rect x='%d' y='%d' width='%d' height='%d' fill='%s' class='b'/><text x='%d' y='%d' class='s'>",
                       lx, ly, cell, cell, hue_colour(i, shot.chunks.size()).c_str(), lx + cell + 6, ly + cell - 2) +
                xml_escaped(c.label[0] ? c.label : "(no label)") +
                format(": %s in use (peak %s), %s in %u block(s), %llu objects alive</text>\n",
                       bytes_text(c.in_use_bytes).c_str(), bytes_text(c.peak_in_use_bytes).c_str(),
                       bytes_text(c.held_bytes).c_str(), c.blocks,
                       static_cast<unsigned long long>(c.objects_made - c.objects_destroyed));
      ly += cell + 6;
    }
    ly += 10;
  }
  std::vector<const std::pair<const std::string, label_total>*> by_held;
  for (const auto& entry : labels) by_held.push_back(&entry);
  std::sort(by_held.begin(), by_held.end(), [](auto* a, auto* b) {
    return a->second.held != b->second.held ? a->second.held > b->second.held : a->first < b->first;
  });
  constexpr std::size_t labels_in_legend = 500;
  legend += format("<text x='%d' y='%d' class='h'>%zu labels</text>\n", lx, ly, labels.size());
  ly += 8;
  for (std::size_t i = 0; i < by_held.size() && i < labels_in_legend; ++i) {
    const auto& [label, l] = *by_held[i];
    legend += "<g class='label total' data-label='" + xml_escaped(label) +
              format("' data-chunks='%zu' data-in-use='%zu' data-held='%zu' fill='%s'>", l.chunks, l.in_use, l.held,
                     l.colour.c_str());
    if (!colour_per_chunk) legend += format("<rect x='%d' y='%d' width='%d' height='%d' class='b'/>", lx, ly, cell, cell);
    legend += format("<text x='%d' y='%d' class='s'>", lx + cell + 6, ly + cell - 2) +
              xml_escaped(label.empty() ? "(no label)" : label) +
              format(": %zu chunk(s), %s in use, %s held</text></g>\n", l.chunks, bytes_text(l.in_use).c_str(),
                     bytes_text(l.held).c_str());
    ly += cell + 6;
  }
  if (by_held.size() > labels_in_legend)
    legend += format("<text x='%d' y='%d' class='s'>... and %zu more labels</text>\n", lx, ly + 10,
                     by_held.size() - labels_in_legend);

  const int width = lx + 520, height = std::max(y, ly + 40) + 20;
  std::string svg = format(
      "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d'>\n"
      "<style>text{font-family:sans-serif;fill:#222} .h{font-size:14px;font-weight:bold} .s{font-size:11px} "
      ".b{stroke:#333;stroke-width:0.5} .p{stroke:#333;stroke-width:0.1} .unused{fill:#f4f4f4;stroke:#ccc;stroke-dasharray:3 2}</style>\n"
      "<rect width='100%%' height='100%%' fill='white'/>\n",
      width, height, width, height);
  svg += format("<text x='%d' y='24' class='h'>perfloc top chunk: %llu live chunks, %s in use, %s committed, %s reserved</text>\n",
                left, static_cast<unsigned long long>(totals.live_chunks), bytes_text(totals.in_use_bytes).c_str(),
                bytes_text(totals.committed_bytes).c_str(), bytes_text(totals.reserved_bytes).c_str());
  svg += format("<text x='%d' y='42' class='s'>one cell = %s of address space, in address order%s</text>\n", left,
                bytes_text(cell_bytes).c_str(),
                one_block_per_run ? "; a cell in slices is a slab: 64 KiB cut into small first regions of chunks"
                                  : ", in the colour of what holds most of it");
  svg += body + legend + "</svg>\n";
  replace_file(path, svg);
}

}  // namespace perfloc
