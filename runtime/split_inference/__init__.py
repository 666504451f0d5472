"""Split (edge/cloud) inference runtime pieces: transmission quantisation (`uaq`)."""
