"""vmond's version: here, at the bottom of the layers, so that every package may name it."""

VERSION = "0.1.0"
