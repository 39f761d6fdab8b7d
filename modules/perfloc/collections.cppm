// perfloc.collections — vector<T>: a vector that stores its elements by reference, its spine in a chunk.
//
// The seed's collection: a growable array of T*, living in a process chunk, that never owns what it points
// at. Freeing the vector frees the spine only; the referents die with their own chunk or by
// perfloc::destroy. That is the one thing to be careful about: a reference into a chunk that is released
// before the vector's (a nested scope's chunk) dangles. Debug builds stop with a message when push_back or an
// assignment from a vector of another chunk brings in such an object, where perfloc can know it (a chunk
// opened later on the same thread).
module;

#include <compare>
#include <cstddef>
#include <initializer_list>
#include <iterator>
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
///
/// Freeing referents: objects made by emplace_back are destroyed when the chunk is released (or earlier by
/// perfloc::destroy(&widgets[i]), after which erase the reference). clear(), erase() and the vector's
/// destructor only forget references.
template <class T>
class vector {
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
      requires(!std::is_const_v<Element>)
    {
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

  /// An empty vector whose spine (and whose emplaced elements) live in `chunk`.
  inline explicit vector(process_chunk& chunk) noexcept : allocator_(chunk) {}
  /// The spine in `chunk`, holding the addresses of `objects`.
  inline vector(process_chunk& chunk, std::initializer_list<std::reference_wrapper<T>> objects) : allocator_(chunk) {
    reserve(objects.size());
    for (T& object : objects) push_back(object);
  }

  /// A second spine in the same chunk with the same references.
  inline vector(const vector& other) : allocator_(other.allocator_) { assign_references(other); }
  inline vector(vector&& other) noexcept
      : allocator_(other.allocator_),
        spine_(std::exchange(other.spine_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        capacity_(std::exchange(other.capacity_, 0)) {}
  /// Copies the references into this vector's own spine (in its own chunk).
  inline vector& operator=(const vector& other) {
    if (this != &other) {
      if (allocator_ != other.allocator_) check_outlives(other);
      assign_references(other);
    }
    return *this;
  }
  /// Takes the other's spine when both live in the same chunk; otherwise copies the references into this
  /// vector's chunk. The other is left empty either way.
  inline vector& operator=(vector&& other) noexcept(false) {
    if (this == &other) return *this;
    if (allocator_ == other.allocator_) {
      free_spine();
      spine_ = std::exchange(other.spine_, nullptr);
      size_ = std::exchange(other.size_, 0);
      capacity_ = std::exchange(other.capacity_, 0);
    } else {
      check_outlives(other);
      assign_references(other);
      other.clear();
    }
    return *this;
  }
  inline ~vector() { free_spine(); }

  /// Makes a T in the vector's chunk and stores its address. If anything throws (the constructor, or the
  /// spine's growth, after which the new object is destroyed), nothing was added and the spine is unchanged.
  template <class... Args>
  inline T& emplace_back(Args&&... args) {
    T* object = allocator_.template make<T>(std::forward<Args>(args)...);
    if (size_ == capacity_) [[unlikely]] {
      try {
        grow(size_ + 1);
      } catch (...) {
        perfloc::destroy(object);
        throw;
      }
    }
    spine_[size_++] = object;
    return *object;
  }

  /// Stores the address of `object`, which must outlive the vector's use of it.
  inline void push_back(T& object) {
    allocator_.check_outlives(&object);
    if (size_ == capacity_) grow(size_ + 1);
    spine_[size_++] = &object;
  }

  /// Forgets the last reference (the object itself is untouched).
  inline void pop_back() noexcept { --size_; }
  /// Forgets every reference; the spine is kept.
  inline void clear() noexcept { size_ = 0; }
  /// Forgets the reference at `at`; returns the position after it.
  inline iterator erase(const_iterator at) noexcept { return erase(at, at + 1); }
  inline iterator erase(const_iterator first, const_iterator last) noexcept {
    T** from = spine_ + (first.at_ - spine_);
    const auto removed = last.at_ - first.at_;
    for (T** p = from; p + removed < spine_ + size_; ++p) *p = p[removed];
    size_ -= static_cast<size_type>(removed);
    return iterator(from);
  }

  /// Makes room for `capacity` references. Throws std::length_error above max_size().
  inline void reserve(size_type capacity) {
    if (capacity > max_size()) throw std::length_error("perfloc::vector::reserve: more than max_size()");
    if (capacity > capacity_) reallocate(capacity);
  }

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

  inline size_type size() const noexcept { return size_; }
  inline bool empty() const noexcept { return size_ == 0; }
  inline size_type capacity() const noexcept { return capacity_; }
  inline size_type max_size() const noexcept { return allocator_.max_size(); }

 private:
  inline void grow(size_type needed) { reallocate(needed > 2 * capacity_ ? (needed > 8 ? needed : 8) : 2 * capacity_); }

  /// A new spine; the old one goes back to the chunk, which reuses it for later allocations.
  inline void reallocate(size_type capacity) {
    T** fresh = allocator_.allocate(capacity);
    for (size_type i = 0; i < size_; ++i) fresh[i] = spine_[i];
    free_spine();
    spine_ = fresh;
    capacity_ = capacity;
  }

  inline void free_spine() noexcept {
    if (spine_) allocator_.deallocate(spine_, capacity_);
    spine_ = nullptr;
    capacity_ = 0;
  }

  /// Debug builds: every reference of `other` (a vector of another chunk) must outlive this vector's chunk.
  inline void check_outlives([[maybe_unused]] const vector& other) const noexcept {
#ifndef NDEBUG
    for (size_type i = 0; i < other.size_; ++i) allocator_.check_outlives(other.spine_[i]);
#endif
  }

  inline void assign_references(const vector& other) {
    if (other.size_ > capacity_) {
      T** fresh = allocator_.allocate(other.size_);
      free_spine();
      spine_ = fresh;
      capacity_ = other.size_;
    }
    for (size_type i = 0; i < other.size_; ++i) spine_[i] = other.spine_[i];
    size_ = other.size_;
  }

  allocator<T*> allocator_;
  T** spine_ = nullptr;
  size_type size_ = 0;
  size_type capacity_ = 0;
};

}  // namespace perfloc
