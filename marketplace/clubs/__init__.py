"""Clubs: closed networks of businesses joined by invitation, whose leads only their members see."""
