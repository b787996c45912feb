//! A hostile store: someone who can read, write, swap, damage, replay or
//! delete any object (a leaked host credential, a misconfigured bucket), or
//! another tenant's host. Each test plays one attack against the real
//! binary on a local repository and checks that no key material or
//! plaintext reaches the attacker and that no data is lost because the
//! store lied. One submodule per family of attacks.

mod damaged_metadata;
mod escrow;
mod kdf;
mod locks;
mod records;
