"""Pure forwarding logic (L2 learning, later paths): packets in, OpenFlow intents out."""
