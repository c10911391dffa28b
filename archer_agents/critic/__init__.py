"""ArCHer's utterance-level critic: double Q and V heads over a text encoder."""
