"""Key hashing compatible with mcrouter: which pool member a key goes to.

Pure computation (no Trio, no I/O), bit-compatible with mcrouter so that a mixed
fleet of mcrouter and mcrouter-trio instances agrees on key placement:

* :func:`routing_key` -- the part of a key that is hashed;
* :func:`ch3` (furc_hash, mcrouter's default), :func:`crc32`, :func:`weighted_ch3`,
  :func:`const_shard` -- the hash functions, ``(key, n) -> index``;
* :func:`murmur64a`, :func:`spooky_hash32` -- the underlying hash primitives;
* :func:`host_id_for`, :func:`ip_address_hash` -- mcrouter's host id, from the host's
  addresses; ``_per_host`` turns it into HostIdRoute's and LatestRoute's choices
  with folly's hash pieces (``_folly``);
* ``_rendezvous`` (the config built-in ``weightedHash``) and ``_buckets``
  (``bucketize`` with ``total_buckets_by_prefix``);
* :func:`make_selector` -- a validated, memoised per-pool ``key -> index`` function
  for the request path;
* :func:`twemproxy_selector` -- the same for twemproxy's (and libmemcached's)
  distributions, ketama, modula and random, over the key hashes in :data:`KEY_HASHES`,
  placing keys exactly where nutcracker does (:func:`server_name`, ``hash_tag``).
"""

from __future__ import annotations

from ._const_shard import const_shard
from ._crc32 import crc32
from ._furc import ch3
from ._host_id import host_id_for, ip_address_hash
from ._key_hashes import KEY_HASHES, KeyHash
from ._keys import routing_key
from ._murmur import murmur64a
from ._selector import HashFunc, make_selector
from ._spooky import spooky_hash32
from ._twemproxy import DISTRIBUTIONS, server_name, twemproxy_selector
from ._weighted import weighted_ch3

__all__ = [
    "DISTRIBUTIONS",
    "KEY_HASHES",
    "HashFunc",
    "KeyHash",
    "ch3",
    "const_shard",
    "crc32",
    "host_id_for",
    "ip_address_hash",
    "make_selector",
    "murmur64a",
    "routing_key",
    "server_name",
    "spooky_hash32",
    "twemproxy_selector",
    "weighted_ch3",
]
