/* Broken on purpose: an acceptor that learns a membership holds its certificate but not
   the votes in the certificate's causal past, so a promise reports only its own votes.
   Across two changes Spin must find two different chosen values. */
#define BROKEN_CAUSAL_PAST 1
#include "membership.pml"
