// perfloc.collections — vector<T>: a vector that stores its elements by reference, its spine in a chunk.
//
// The seed's collection: a growable array of T*, living in a process chunk, that never owns what it points
// at. Freeing the vector frees the spine only; the referents die with their own chunk or by
// perfloc::destroy. That is the one thing to be careful about: a reference into a chunk that is released
// before the vector's (a nested scope's chunk) dangles. Debug builds stop with a message when a reference
// to such an object comes in — push_back, insert, assign, resize, copy and move assignment, swap — where
// perfloc can know it (a chunk opened later on the same thread).
//
// Reordering: the references, never the objects. The iterators yield T& (so `for (T& x : refs)`, views and
// every reading algorithm work as on a std::vector<T>), which means that std::sort, std::remove_if,
// std::rotate or std::reverse on begin()/end() would move-assign the referents — objects the vector may not
// own. Boost.PtrContainer meets the same problem with ptr_vector's indirect iterators and answers it with
// members (sort, stable_sort, unique, erase_if) that permute the pointers under an indirected predicate;
// std::ranges answers it with projections: run the algorithm over the pointers and dereference in the
// projection. This vector takes both: members for the common cases (sort, stable_sort, erase_if, reverse,
// swap_elements; comparators and predicates see T, and take a projection as std::ranges does), and
// pointers(), a span over the spine, for any other std::ranges algorithm that only permutes (rotate,
// shuffle, partition, nth_element) with a dereferencing projection. A proxy reference that rebinds on
// assignment (as std::vector<bool>'s does) was left out: `T&` loops and views would stop compiling.
//
// Growth: the first spine holds 8 references, and a full spine doubles (or grows to what one insert needs,
// if more), up to max_size(). An old spine goes back to the chunk, which reuses it.
module;

#include <algorithm>
#include <compare>
#include <concepts>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <span>
#include <stdexcept>
#include <type_traits>
#include <utility>

export module perfloc.collections;

import perfloc.process;

export namespace perfloc {

/// A vector of references: element i is a T living elsewhere, usually made in a chunk.
///
///   perfloc::process_chunk chunk;
///   perfloc::vector<Widget> widgets{chunk};
///   widgets.emplace_back(1, 2);   // makes a Widget in the chunk (chunk.make<Widget>) and stores its address
///   widgets.push_back(existing);  // stores the address of an object that lives elsewhere
///   for (Widget& w : widgets) ...
///   widgets.sort({}, &Widget::id);  // reorders the references; no Widget is assigned
///
/// Freeing referents: objects made by emplace_back are destroyed when the chunk is released (or earlier by
/// perfloc::destroy(&widgets[i]), after which erase the reference). clear(), erase() and the vector's
/// destructor only forget references.
template <class T>
class vector {
  /// Random access over the referents: `*it` is the T itself, as for a std::vector<T>. Assigning through
  /// it — `*it = x`, and so std::sort, std::stable_sort, std::remove_if, std::rotate, std::reverse or
  /// std::ranges::swap(*a, *b) on begin()/end() — assigns the objects (their values move between objects
  /// the vector may not own) and leaves every reference where it was. To reorder the references, use the
  /// members sort, stable_sort, erase_if, reverse, swap_elements, or a std::ranges algorithm on pointers().
  template <class Element>
  class basic_iterator {
   public:
    using iterator_concept = std::random_access_iterator_tag;
    using iterator_category = std::random_access_iterator_tag;
    using value_type = std::remove_cv_t<Element>;
    using difference_type = std::ptrdiff_t;
    using pointer = Element*;
    using reference = Element&;

    basic_iterator() = default;
    inline explicit basic_iterator(T* const* at) noexcept : at_(at) {}
    inline operator basic_iterator<const Element>() const noexcept  // iterator -> const_iterator
        requires(!std::is_const_v<Element>) {
      return basic_iterator<const Element>(at_);
    }

    inline reference operator*() const noexcept { return **at_; }
    inline pointer operator->() const noexcept { return *at_; }
    inline reference operator[](difference_type n) const noexcept { return *at_[n]; }
    inline basic_iterator& operator++() noexcept { return ++at_, *this; }
    inline basic_iterator operator++(int) noexcept { return basic_iterator(at_++); }
    inline basic_iterator& operator--() noexcept { return --at_, *this; }
    inline basic_iterator operator--(int) noexcept { return basic_iterator(at_--); }
    inline basic_iterator& operator+=(difference_type n) noexcept { return at_ += n, *this; }
    inline basic_iterator& operator-=(difference_type n) noexcept { return at_ -= n, *this; }
    inline friend basic_iterator operator+(basic_iterator i, difference_type n) noexcept { return i += n; }
    inline friend basic_iterator operator+(difference_type n, basic_iterator i) noexcept { return i += n; }
    inline friend basic_iterator operator-(basic_iterator i, difference_type n) noexcept { return i -= n; }
    inline friend difference_type operator-(basic_iterator a, basic_iterator b) noexcept { return a.at_ - b.at_; }
    inline friend bool operator==(basic_iterator a, basic_iterator b) noexcept { return a.at_ == b.at_; }
    inline friend std::strong_ordering operator<=>(basic_iterator a, basic_iterator b) noexcept {
      return a.at_ <=> b.at_;
    }

   private:
    T* const* at_ = nullptr;
    friend class vector;
  };

 public:
  using value_type = T;
  using size_type = std::size_t;
  using difference_type = std::ptrdiff_t;
  using reference = T&;
  using const_reference = const T&;
  using iterator = basic_iterator<T>;
  using const_iterator = basic_iterator<const T>;
  using reverse_iterator = std::reverse_iterator<iterator>;
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;

  // ---- Construction and assignment ------------------------------------------------------------------------

  /// An empty vector whose spine (and whose emplaced elements) live in `chunk`.
  inline explicit vector(process_chunk& chunk) noexcept : allocator_(chunk) {}
  /// The spine in `chunk`, holding the addresses of `objects`.
  inline vector(process_chunk& chunk, std::initializer_list<std::reference_wrapper<T>> objects) : allocator_(chunk) {
    assign(objects);
  }

  /// A second spine in the same chunk with the same references.
  inline vector(const vector& other) : allocator_(other.allocator_) { replace_with(other.spine_, other.size_); }
  inline vector(vector&& other) noexcept
      : allocator_(other.allocator_),
        spine_(std::exchange(other.spine_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  /// Copies the references into this vector's own spine (in its own chunk).
  inline vector& operator=(const vector& other) {
    if (this != &other) {
      if (allocator_ != other.allocator_) check_outlives(other.spine_, other.size_);
      replace_with(other.spine_, other.size_);
    }
    return *this;
  }
  /// Takes the other's spine when both live in the same chunk: that never throws. Otherwise copies the
  /// references into this vector's own spine, which may have to grow (std::bad_alloc), as a
  /// std::pmr::vector does between resources; so the operator cannot say noexcept. The other is left empty.
  inline vector& operator=(vector&& other) {
    if (this == &other) return *this;
    if (allocator_ == other.allocator_) {
      free_spine();
      spine_ = std::exchange(other.spine_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    } else {
      check_outlives(other.spine_, other.size_);
      replace_with(other.spine_, other.size_);
      other.clear();
    }
    return *this;
  }
  inline ~vector() { free_spine(); }

  /// Replaces the references with `count` references to `object`.
  inline void assign(size_type count, T& object) {
    allocator_.check_outlives(&object);
    make_room_for(count, 0);
    std::fill_n(spine_, count, &object);
    size_ = count;
  }
  /// Replaces the references with the addresses of [first, last) (T& or std::reference_wrapper<T>), which
  /// must not be this vector's own iterators. If an iterator throws, the references read so far remain.
  template <std::forward_iterator Iterator>
  requires std::convertible_to<std::iter_reference_t<Iterator>, T&> inline void assign(Iterator first, Iterator last) {
    const auto count = static_cast<size_type>(std::distance(first, last));
    make_room_for(count, 0);
    size_ = 0;
    for (; first != last; ++first) spine_[size_++] = address_of(*first);
  }
  inline void assign(std::initializer_list<std::reference_wrapper<T>> objects) {
    assign(objects.begin(), objects.end());
  }

  /// Exchanges the references. In one chunk the spines are swapped and nothing throws; across chunks each
  /// vector copies the other's references into its own spine, which may have to grow first (if that throws,
  /// both keep their references). Iterators follow their spine in the first case, not in the second.
  inline void swap(vector& other) {
    if (allocator_ == other.allocator_) {
      std::swap(spine_, other.spine_);
      std::swap(size_, other.size_);
      std::swap(capacity_, other.capacity_);
      return;
    }
    check_outlives(other.spine_, other.size_);
    other.check_outlives(spine_, size_);
    if (other.size_ > capacity_) reallocate(other.size_);
    if (size_ > other.capacity_) other.reallocate(size_);
    const size_type common = std::min(size_, other.size_);
    std::swap_ranges(spine_, spine_ + common, other.spine_);
    if (size_ > common)
      std::copy(spine_ + common, spine_ + size_, other.spine_ + common);
    else
      std::copy(other.spine_ + common, other.spine_ + other.size_, spine_ + common);
    std::swap(size_, other.size_);
  }
  inline friend void swap(vector& a, vector& b) { a.swap(b); }

  // ---- Adding references ----------------------------------------------------------------------------------

  /// Makes a T in the vector's chunk and stores its address. If anything throws (the constructor, or the
  /// spine's growth, after which the new object is destroyed), nothing was added and the spine is unchanged.
  template <class... Args>
  inline T& emplace_back(Args&&... args) {
    T* object = allocator_.template make<T>(std::forward<Args>(args)...);
    if (size_ == capacity_) [[unlikely]]
      grow_or_destroy(object, size_ + 1);
    spine_[size_++] = object;
    return *object;
  }

  /// Stores the address of `object`, which must outlive the vector's use of it.
  inline void push_back(T& object) {
    allocator_.check_outlives(&object);
    if (size_ == capacity_) [[unlikely]]
      grow(size_ + 1);
    spine_[size_++] = &object;
  }

  /// Makes a T in the vector's chunk and stores its address before `at`; the same guarantee as emplace_back.
  template <class... Args>
  inline iterator emplace(const_iterator at, Args&&... args) {
    const size_type index = index_of(at);
    T* object = allocator_.template make<T>(std::forward<Args>(args)...);
    if (size_ == capacity_) grow_or_destroy(object, size_ + 1);
    spine_[size_++] = object;
    return move_tail_to(index, 1);
  }
  /// Stores the address of `object` before `at`; returns the position of the new reference.
  inline iterator insert(const_iterator at, T& object) { return insert(at, size_type{1}, object); }
  /// Stores `count` references to `object` before `at`.
  inline iterator insert(const_iterator at, size_type count, T& object) {
    allocator_.check_outlives(&object);
    const size_type index = index_of(at);
    make_room_for(count, size_);
    std::fill_n(spine_ + size_, count, &object);
    size_ += count;
    return move_tail_to(index, count);
  }
  /// Stores the addresses of [first, last) (T& or std::reference_wrapper<T>) before `at`, in their order;
  /// they must not be this vector's own iterators. If anything throws, nothing was added.
  template <std::forward_iterator Iterator>
  requires std::convertible_to<std::iter_reference_t<Iterator>, T&> inline iterator insert(const_iterator at,
                                                                                           Iterator first,
                                                                                           Iterator last) {
    const size_type index = index_of(at);
    const auto count = static_cast<size_type>(std::distance(first, last));
    make_room_for(count, size_);
    T** tail = spine_ + size_;
    for (; first != last; ++first) *tail++ = address_of(*first);  // past size_ until the rotation below
    size_ += count;
    return move_tail_to(index, count);
  }
  inline iterator insert(const_iterator at, std::initializer_list<std::reference_wrapper<T>> objects) {
    return insert(at, objects.begin(), objects.end());
  }

  /// Shrinking forgets the references past `count`. Growing makes value-initialized Ts in the vector's chunk
  /// (as `count - size()` calls of emplace_back() would): a vector of references has nothing else to
  /// refer to. If a constructor throws, the objects made so far are destroyed and the size is unchanged.
  inline void resize(size_type count) requires std::default_initializable<T> {
    if (count <= size_) return void(size_ = count);
    make_room_for(count - size_, size_);
    size_type made = size_;
    try {
      for (; made < count; ++made) spine_[made] = allocator_.template make<T>();
    } catch (...) {
      while (made > size_) perfloc::destroy(spine_[--made]);
      throw;
    }
    size_ = count;
  }
  /// Shrinking forgets the references past `count`; growing adds references to `object`.
  inline void resize(size_type count, T& object) {
    if (count <= size_) return void(size_ = count);
    insert(end(), count - size_, object);
  }

  // ---- Forgetting references (the objects are untouched) --------------------------------------------------

  /// Forgets the last reference.
  inline void pop_back() noexcept { --size_; }
  /// Forgets every reference; the spine is kept.
  inline void clear() noexcept { size_ = 0; }
  /// Forgets the reference at `at`; returns the position after it.
  inline iterator erase(const_iterator at) noexcept { return erase(at, at + 1); }
  inline iterator erase(const_iterator first, const_iterator last) noexcept {
    T** from = spine_ + index_of(first);
    T** end = std::copy(spine_ + index_of(last), spine_ + size_, from);
    size_ = static_cast<size_type>(end - spine_);
    return iterator(from);
  }
  /// Forgets the references whose object satisfies `predicate` (given projection(object)); keeps the order of
  /// the rest. Returns how many were forgotten. Also as perfloc::erase_if(refs, predicate).
  template <class Predicate, class Projection = std::identity>
  inline size_type erase_if(Predicate predicate, Projection projection = {}) {
    const auto removed = std::ranges::remove_if(spine_, spine_ + size_, predicate, referent(projection));
    size_ -= removed.size();
    return removed.size();
  }

  // ---- Reordering references (the objects are untouched) --------------------------------------------------

  /// Sorts the references by their objects, as std::ranges::sort(refs, compare, projection) would sort a
  /// std::vector<T> — but no T is moved or assigned: `refs.sort()`, `refs.sort(by_id)`,
  /// `refs.sort(std::ranges::greater{}, &Widget::id)`.
  template <class Compare = std::ranges::less, class Projection = std::identity>
  inline void sort(Compare compare = {}, Projection projection = {}) {
    std::ranges::sort(spine_, spine_ + size_, compare, referent(projection));
  }
  /// As sort, keeping the order of references whose objects compare equal.
  template <class Compare = std::ranges::less, class Projection = std::identity>
  inline void stable_sort(Compare compare = {}, Projection projection = {}) {
    std::ranges::stable_sort(spine_, spine_ + size_, compare, referent(projection));
  }
  /// Reverses the order of the references.
  inline void reverse() noexcept { std::reverse(spine_, spine_ + size_); }
  /// Exchanges the references at positions i and j.
  inline void swap_elements(size_type i, size_type j) noexcept { std::swap(spine_[i], spine_[j]); }

  /// The spine as a span of pointers, for std::ranges algorithms that only permute, with a projection that
  /// dereferences: `std::ranges::rotate(refs.pointers(), refs.pointers().begin() + 2)`,
  /// `std::ranges::partition(refs.pointers(), is_big, [](Widget* w) -> Widget& { return *w; })`.
  /// Storing an address that was not already in the vector skips the debug check of push_back.
  inline std::span<T*> pointers() noexcept { return {spine_, size_}; }
  inline std::span<T* const> pointers() const noexcept { return {spine_, size_}; }
  /// The spine: size() addresses, in order (nullptr while capacity() is 0).
  inline T* const* data() const noexcept { return spine_; }

  // ---- Access ---------------------------------------------------------------------------------------------

  inline T& operator[](size_type i) noexcept { return *spine_[i]; }
  inline const T& operator[](size_type i) const noexcept { return *spine_[i]; }
  /// Throws std::out_of_range when i >= size().
  inline T& at(size_type i) {
    if (i >= size_) throw std::out_of_range("perfloc::vector::at: index out of range");
    return *spine_[i];
  }
  inline const T& at(size_type i) const { return const_cast<vector*>(this)->at(i); }
  inline T& front() noexcept { return *spine_[0]; }
  inline const T& front() const noexcept { return *spine_[0]; }
  inline T& back() noexcept { return *spine_[size_ - 1]; }
  inline const T& back() const noexcept { return *spine_[size_ - 1]; }

  inline iterator begin() noexcept { return iterator(spine_); }
  inline iterator end() noexcept { return iterator(spine_ + size_); }
  inline const_iterator begin() const noexcept { return const_iterator(spine_); }
  inline const_iterator end() const noexcept { return const_iterator(spine_ + size_); }
  inline const_iterator cbegin() const noexcept { return begin(); }
  inline const_iterator cend() const noexcept { return end(); }
  inline reverse_iterator rbegin() noexcept { return reverse_iterator(end()); }
  inline reverse_iterator rend() noexcept { return reverse_iterator(begin()); }
  inline const_reverse_iterator rbegin() const noexcept { return const_reverse_iterator(end()); }
  inline const_reverse_iterator rend() const noexcept { return const_reverse_iterator(begin()); }
  inline const_reverse_iterator crbegin() const noexcept { return rbegin(); }
  inline const_reverse_iterator crend() const noexcept { return rend(); }

  inline size_type size() const noexcept { return size_; }
  inline bool empty() const noexcept { return size_ == 0; }
  inline size_type capacity() const noexcept { return capacity_; }
  inline size_type max_size() const noexcept { return allocator_.max_size(); }

  /// Makes room for `capacity` references. Throws std::length_error above max_size().
  inline void reserve(size_type capacity) {
    if (capacity > max_size()) throw std::length_error("perfloc::vector::reserve: more than max_size()");
    if (capacity > capacity_) reallocate(capacity);
  }
  /// Gives the unused part of the spine back to the chunk (a smaller spine, or none when empty).
  inline void shrink_to_fit() {
    if (size_ == capacity_) return;
    if (size_ == 0) return free_spine();
    reallocate(size_);
  }

  /// Compare the objects, element by element, as for a std::vector<T> (and a Boost ptr_vector). Whether two
  /// vectors hold the same objects is std::ranges::equal(a.pointers(), b.pointers()).
  inline friend bool operator==(const vector& a, const vector& b) requires std::equality_comparable<T> {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }
  inline friend auto operator<=>(const vector& a, const vector& b) requires std::three_way_comparable<T> {
    return std::lexicographical_compare_three_way(a.begin(), a.end(), b.begin(), b.end());
  }

 private:
  /// A projection that reads the object behind a spine entry, then applies the caller's projection.
  template <class Projection>
  static inline auto referent(Projection& projection) noexcept {
    return [&projection](T* object) -> decltype(auto) { return std::invoke(projection, *object); };
  }

  inline T* address_of(T& object) const noexcept {
    allocator_.check_outlives(&object);
    return std::addressof(object);
  }
  inline size_type index_of(const_iterator at) const noexcept { return static_cast<size_type>(at.at_ - spine_); }

  /// Debug builds: every address in [from, from + count) must outlive this vector's chunk.
  inline void check_outlives([[maybe_unused]] T* const* from, [[maybe_unused]] size_type count) const noexcept {
#ifndef NDEBUG
    for (size_type i = 0; i < count; ++i) allocator_.check_outlives(from[i]);
#endif
  }

  /// The references [size_ - count, size_) were just added at the end; rotates them to `index`.
  inline iterator move_tail_to(size_type index, size_type count) noexcept {
    std::rotate(spine_ + index, spine_ + size_ - count, spine_ + size_);
    return iterator(spine_ + index);
  }

  /// Room for `count` more references after the first `keep` (keep = size_: append; 0: replace). Throws
  /// before changing anything.
  inline void make_room_for(size_type count, size_type keep) {
    if (count > max_size() - keep) throw std::length_error("perfloc::vector: more than max_size() references");
    if (keep + count <= capacity_) return;
    if (keep == 0) {
      T** fresh = allocator_.allocate(count);  // nothing to keep: no copy
      free_spine();
      spine_ = fresh;
      capacity_ = count;
    } else {
      grow(keep + count);
    }
  }

  inline void grow(size_type needed) {
    if (needed > max_size()) throw std::length_error("perfloc::vector: more than max_size() references");
    const size_type doubled = capacity_ > max_size() / 2 ? max_size() : 2 * capacity_;
    reallocate(std::max({needed, doubled, std::min(size_type{8}, max_size())}));
  }
  inline void grow_or_destroy(T* object, size_type needed) {
    try {
      grow(needed);
    } catch (...) {
      perfloc::destroy(object);
      throw;
    }
  }

  /// A new spine; the old one goes back to the chunk, which reuses it for later allocations.
  inline void reallocate(size_type capacity) {
    T** fresh = allocator_.allocate(capacity);
    std::copy(spine_, spine_ + size_, fresh);
    free_spine();
    spine_ = fresh;
    capacity_ = capacity;
  }

  inline void free_spine() noexcept {
    if (spine_) allocator_.deallocate(spine_, capacity_);
    spine_ = nullptr;
    capacity_ = 0;
  }

  /// Becomes a copy of the `count` references at `from` (another vector's spine).
  inline void replace_with(T* const* from, size_type count) {
    make_room_for(count, 0);
    std::copy(from, from + count, spine_);
    size_ = count;
  }

  allocator<T*> allocator_;
  T** spine_ = nullptr;
  size_type size_ = 0;
  size_type capacity_ = 0;
};

/// Forgets the references whose object satisfies `predicate`, as std::erase_if does for a std::vector<T>;
/// returns how many were forgotten. The objects are untouched.
template <class T, class Predicate>
inline typename vector<T>::size_type erase_if(vector<T>& refs, Predicate predicate) {
  return refs.erase_if(std::move(predicate));
}

}  // namespace perfloc
