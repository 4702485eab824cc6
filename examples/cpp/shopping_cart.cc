// Shopping carts with the C++ SDK: concurrent writers add items to one cart
// with read-modify-write, and a resolver merges concurrent versions by union.
//
//   build/release/bin/shopping_cart_example --seed 127.0.0.1:7000
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dynamo/client.h"

namespace {

std::set<std::string> ParseCart(const std::string& value) {
  std::set<std::string> items;
  std::stringstream ss(value);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) items.insert(item);
  }
  return items;
}

std::string Join(const std::set<std::string>& items) {
  std::string out;
  for (const std::string& i : items) out += (out.empty() ? "" : ",") + i;
  return out;
}

// The application's reconciliation: the union of every concurrent cart.
std::string MergeCarts(const std::vector<std::string>& values) {
  std::set<std::string> all;
  for (const std::string& v : values) {
    for (const std::string& i : ParseCart(v)) all.insert(i);
  }
  return Join(all);
}

// Adds `item` to `cart`, retrying failed writes (a retry reads first, so an
// in-doubt write that did land is not added twice).
bool AddItem(dynamo::Client& client, const std::string& cart, const std::string& item) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    dynamo::Result<dynamo::GetResult> current = client.Get(cart);
    if (!current.ok()) continue;
    std::set<std::string> items = current->found ? ParseCart(current->values[0]) : std::set<std::string>{};
    items.insert(item);
    dynamo::WriteOptions options;
    options.context = current->context;
    if (client.Put(cart, Join(items), options).ok()) return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> seeds;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--seed") seeds.push_back(argv[++i]);
  }
  if (seeds.empty()) {
    std::cerr << "usage: " << argv[0] << " --seed HOST:PORT [--seed HOST:PORT]...\n";
    return 2;
  }
  constexpr int kWriters = 4;
  constexpr int kItems = 25;
  const std::string cart = "cart:cpp-example";

  std::vector<std::thread> writers;
  std::vector<int> acknowledged(kWriters, 0);
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      dynamo::ClientOptions options;
      options.seeds = seeds;
      options.resolver = MergeCarts;
      auto client = dynamo::Client::Open(options);
      if (!client.ok()) {
        std::cerr << "writer " << w << ": " << client.status().ToString() << "\n";
        return;
      }
      for (int i = 0; i < kItems; ++i) {
        if (AddItem(**client, cart, "w" + std::to_string(w) + "-" + std::to_string(i))) ++acknowledged[w];
      }
    });
  }
  for (std::thread& t : writers) t.join();

  dynamo::ClientOptions options;
  options.seeds = seeds;
  options.resolver = MergeCarts;
  auto reader = dynamo::Client::Open(options);
  if (!reader.ok()) {
    std::cerr << reader.status().ToString() << "\n";
    return 1;
  }
  dynamo::Result<dynamo::GetResult> final_cart = (*reader)->Get(cart);
  if (!final_cart.ok()) {
    std::cerr << final_cart.status().ToString() << "\n";
    return 1;
  }
  size_t stored = final_cart->found ? ParseCart(final_cart->values[0]).size() : 0;
  int acked = 0;
  for (int a : acknowledged) acked += a;
  std::cout << "C++ example: " << kWriters << " writers added " << acked << " items to " << cart
            << " concurrently; the cart holds " << stored << " items ("
            << (stored == static_cast<size_t>(acked) ? "none lost" : "SOME LOST") << ")\n";
  return stored == static_cast<size_t>(acked) ? 0 : 1;
}
