/* Broken on purpose: acceptors accept without checking the promised ballot. Spin must
   find two different chosen values (tests/agreement/test_model.py). */
#define BROKEN_PROMISE 1
#include "slot.pml"
