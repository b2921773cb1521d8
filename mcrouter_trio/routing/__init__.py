"""Routing values (pure): route handles, their registry, combinators and the route tree."""
