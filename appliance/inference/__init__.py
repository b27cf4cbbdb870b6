"""Inference: the TFLite models of the three slots, loaded from the manifest."""
