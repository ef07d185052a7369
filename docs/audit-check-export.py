#!/usr/bin/env python3
"""Checks a Switchboard audit export with nothing but Python and (for the
signature) the `cryptography` package: an independent reading of docs/audit.md.
Usage: check_export.py FILE PUBLIC_KEY_HEX"""
import hashlib, json, re, sys

def hex_bytes(text, length):
    # One spelling only: lowercase, exact length (bytes.fromhex alone takes upper case too).
    assert re.fullmatch(f"[0-9a-f]{{{2 * length}}}", text), f"not {length} bytes of lowercase hex: {text!r}"
    return bytes.fromhex(text)

def canonical(value):
    # RFC 8785 for what audit entries hold (no floats): sorted keys, no
    # whitespace, UTF-8. Python sorts str by code point, RFC 8785 by UTF-16
    # code unit: they agree unless keys mix U+E000..U+FFFF with astral characters.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()

def root_from_path(index, size, leaf, path):  # RFC 9162 section 2.1.3.2
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0: raise ValueError("path too long")
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1; sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1; sn >>= 1
    if sn != 0: raise ValueError("path too short")
    return r

data = open(sys.argv[1], "rb").read()
key_hex = sys.argv[2]
lines = data.split(b"\n")
assert lines[-1] == b"", "ends with a newline"
header = json.loads(lines[0])
assert canonical(header) == lines[0], "header is canonical"
assert header["public_key"] == key_hex, "the file's key is the key given"
cp = header["checkpoint"]
message = f"switchboard-checkpoint\n{cp['tree_size']}\n{cp['root']}\n{cp['at']}\n".encode()
assert cp["key_id"] == hashlib.sha256(bytes.fromhex(key_hex)).hexdigest()[:16]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
Ed25519PublicKey.from_public_bytes(hex_bytes(key_hex, 32)).verify(hex_bytes(cp["signature"], 64), message)
root = hex_bytes(cp["root"], 32)
entry_lines = lines[1:-1]
assert header["entries"] == len(entry_lines)
for line in entry_lines:
    record = json.loads(line)
    assert canonical(record) == line, "entry line is canonical"
    entry, proof = record["entry"], record["proof"]
    without_hash = {k: v for k, v in entry.items() if k != "hash"}
    entry_hash = hashlib.sha256(canonical(without_hash)).digest()
    assert entry_hash.hex() == entry["hash"], f"entry {entry['n']}: hash"
    leaf = hashlib.sha256(b"\x00" + entry_hash).digest()
    assert leaf.hex() == proof["leaf_hash"] and proof["n"] == entry["n"] and proof["tree_size"] == cp["tree_size"]
    path = [hex_bytes(h, 32) for h in proof["path"]]
    assert root_from_path(entry["n"] - 1, cp["tree_size"], leaf, path) == root, f"entry {entry['n']}: proof"
    print(f"entry {entry['n']} ok: {entry['action']} at {entry['at']}")
print(f"ok: checkpoint of {cp['tree_size']} entries signed by key {cp['key_id']}")
