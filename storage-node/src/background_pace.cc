#include "background_pace.h"

namespace dynamo::node {

bool BackgroundPace::Lifted(const BackgroundLoad& load) {
  const bool behind = load.writes_slowed || load.unflushed_memtables >= 2 ||
                      (load.unflushed_memtables >= 1 && load.active_fill >= kPaceLiftFill) ||
                      load.level0_files >= kPaceLiftLevel0Factor * level0_trigger_;
  const bool caught_up = !load.writes_slowed && load.unflushed_memtables == 0 &&
                         load.active_fill < kPaceLiftFill && load.level0_files <= level0_trigger_;
  if (!lifted_ && behind) {
    lifted_ = true;
    ++lifts_;
  } else if (lifted_ && caught_up) {
    lifted_ = false;
  }
  return lifted_;
}

}  // namespace dynamo::node
