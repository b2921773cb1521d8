"""mcrouter-trio: a memcached protocol router with mcrouter's semantics, on Trio."""

__version__ = "0.1.0"

#: The memcached release whose text protocol the proxy reproduces byte for byte.
MEMCACHED_VERSION = "1.6.18"

#: What the `version` command and the `version` stat report. Clients read the leading
#: number as the server's memcached version and pick their behaviour by it:
#: libmemcached takes major.minor.micro with strtol (a major of 0, as in a bare
#: "0.1.0", is a parse error) and ignores what follows; its memcapable expects 1.6's
#: replies once the minor digit is 6 or more; pymemcache returns the whole remainder.
#: So the memcached version comes first, as mcrouter puts its own version first "for
#: libmemcached". The proxy's name and version follow as build metadata, after a `+`
#: and with no space: memcached's version is one word, and clients split on spaces
#: (emcache's `version()` fails on a third word of the line, libmemcached's `stats`
#: keeps the first word of the value). "1.6.18+mcrouter-trio-0.1.0" is also a valid
#: semver and PEP 440 version.
SERVER_VERSION = f"{MEMCACHED_VERSION}+mcrouter-trio-{__version__}"
