"""The severity CNN with spatial attention (issue 6): network first; training, evaluation and
the shipped checkpoint come next."""
