#include "dynamo/status.h"

#include <gtest/gtest.h>

namespace dynamo {
namespace {

TEST(StatusTest, OkIsEmpty) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.message(), "");
  EXPECT_FALSE(s.in_doubt());
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(sizeof(Status), sizeof(void*));
}

TEST(StatusTest, ErrorCarriesCodeMessageAndDoubt) {
  Status s = Status::Timeout("no reply from n2");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsTimeout());
  EXPECT_EQ(s.message(), "no reply from n2");
  EXPECT_EQ(s.ToString(), "Timeout: no reply from n2");
  Status d = s.WithInDoubt(true);
  EXPECT_TRUE(d.in_doubt());
  EXPECT_FALSE(s.in_doubt());
  EXPECT_EQ(d.ToString(), "Timeout: no reply from n2 (in doubt)");
}

TEST(StatusTest, CopiesAreIndependent) {
  Status a = Status::NotFound("k");
  Status b = a;
  b = b.Annotate("get");
  EXPECT_EQ(a.message(), "k");
  EXPECT_EQ(b.message(), "get: k");
  EXPECT_EQ(b.code(), StatusCode::kNotFound);
  Status moved = std::move(b);
  EXPECT_EQ(moved.message(), "get: k");
  EXPECT_TRUE(Status().Annotate("x").ok());
}

TEST(StatusTest, EveryCodeHasAName) {
  for (uint8_t c = 0; c <= kMaxStatusCode; ++c) {
    EXPECT_NE(StatusCodeName(static_cast<StatusCode>(c)), "Unknown") << int(c);
  }
}

Status FailsWhen(bool fail) {
  DYNAMO_RETURN_IF_ERROR(fail ? Status::Busy("full") : Status::OK());
  return Status::Corruption("reached the end");
}

TEST(StatusTest, ReturnIfError) {
  EXPECT_EQ(FailsWhen(true).code(), StatusCode::kBusy);
  EXPECT_EQ(FailsWhen(false).code(), StatusCode::kCorruption);
}

TEST(ResultTest, HoldsValueOrError) {
  Result<std::string> v = std::string("hello");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "hello");
  EXPECT_EQ(v->size(), 5u);
  EXPECT_TRUE(v.status().ok());
  Result<std::string> e = Status::InvalidArgument("bad");
  EXPECT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument);
  std::string taken = std::move(v).value();
  EXPECT_EQ(taken, "hello");
}

TEST(ResultDeathTest, ValueOfErrorAborts) {
  Result<int> e = Status::IOError("disk");
  EXPECT_DEATH((void)e.value(), "IOError: disk");
}

}  // namespace
}  // namespace dynamo
