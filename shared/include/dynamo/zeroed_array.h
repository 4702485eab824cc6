// ZeroedArray<T>: a fixed-size array of T, all zero bits when made, whose
// memory comes from calloc. Making a large one touches none of its pages
// (the allocator hands out pages the kernel zeroes when they are first
// touched, or zeroes memory that is already mapped), so the page faults of
// a table of megabytes fall on the writes that fill it, spread out, instead
// of all on the thread that makes it, which others may be waiting for.
//
// T: trivially copyable and destructible, and valid as all zero bits (the
// value a calloc'd T starts with). Plain values. Thread-safety: none.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace dynamo {

template <typename T>
class ZeroedArray {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>);

 public:
  ZeroedArray() = default;
  // Throws std::bad_alloc when the memory is not there.
  explicit ZeroedArray(size_t size) : data_(Allocate(size)), size_(size) {}
  ZeroedArray(const ZeroedArray& other) : ZeroedArray(other.size_) {
    if (size_ > 0) std::memcpy(data_.get(), other.data_.get(), size_ * sizeof(T));
  }
  ZeroedArray& operator=(const ZeroedArray& other) {
    if (this != &other) *this = ZeroedArray(other);
    return *this;
  }
  ZeroedArray(ZeroedArray&& other) noexcept
      : data_(std::move(other.data_)), size_(std::exchange(other.size_, 0)) {}
  ZeroedArray& operator=(ZeroedArray&& other) noexcept {
    data_ = std::move(other.data_);
    size_ = std::exchange(other.size_, 0);
    return *this;
  }

  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  size_t size() const { return size_; }
  // Sets every element back to all zero bits.
  void Clear() {
    if (size_ > 0) std::memset(static_cast<void*>(data_.get()), 0, size_ * sizeof(T));
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  static T* Allocate(size_t size) {
    if (size == 0) return nullptr;
    void* p = std::calloc(size, sizeof(T));
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }

  std::unique_ptr<T[], Free> data_;
  size_t size_ = 0;
};

}  // namespace dynamo
