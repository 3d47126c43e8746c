"""culturealign: how well does a language model answer like people from a given country, and how does that
depend on the way it is asked? Implements Bravansky, Trhlik & Barez, "Rethinking AI Cultural Alignment"."""

__version__ = "0.1.0"
