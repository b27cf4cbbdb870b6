"""Recording: clips of events with pre-roll and post-roll, written atomically, kept within a quota."""
