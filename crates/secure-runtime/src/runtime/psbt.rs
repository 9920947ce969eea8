//! PSBT signing for the key provider's UTXO coins (docs/bitgo.md): the
//! wallet manager hands over the unsigned PSBT BitGo built, and gets it
//! back with this key's partial signature on every input whose BIP-32
//! derivation names this key's fingerprint, every other field kept.
//! rust-bitcoin computes the sighashes (legacy, SegWit v0 and Taproot, by
//! each input's own sighash type) and serializes the PSBT again.

use bitcoin::bip32::{Fingerprint, KeySource, Xpriv};
use bitcoin::psbt::{GetKey, GetKeyError, KeyRequest, Psbt};
use bitcoin::secp256k1::{Secp256k1, Signing};
use bitcoin::PrivateKey;

use super::provider::ProviderError;

/// The key of one xprv, handed to rust-bitcoin's signer only for
/// derivations that name its own fingerprint (never its parent's, which a
/// depth-0 key would share with any `00000000` entry).
struct OwnKey<'a> {
    xpriv: &'a Xpriv,
    fingerprint: Fingerprint,
}

impl GetKey for OwnKey<'_> {
    type Error = GetKeyError;

    fn get_key<C: Signing>(
        &self,
        request: KeyRequest,
        secp: &Secp256k1<C>,
    ) -> Result<Option<PrivateKey>, GetKeyError> {
        match request {
            KeyRequest::Bip32((fingerprint, path)) if fingerprint == self.fingerprint => Ok(Some(
                self.xpriv
                    .derive_priv(secp, &path)
                    .map_err(GetKeyError::Bip32)?
                    .to_priv(),
            )),
            _ => Ok(None),
        }
    }
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// Signs `psbt_hex` with the key of `xprv` (its 78-byte serialization):
/// the PSBT in lowercase hex with the partial signatures added.
///
/// Refused (400): not a PSBT; no input naming this key's fingerprint; a
/// derivation under this fingerprint that does not lead to the public key
/// it lists (so nothing is signed by a key the script does not hold); an
/// input whose sighash cannot be computed (a missing previous output, say).
pub fn sign_psbt(xprv: &[u8], psbt_hex: &str) -> Result<String, ProviderError> {
    let bytes = kms_crypto::unhex(psbt_hex).ok_or_else(|| {
        bad("signablePayload must be 0x followed by a 32-byte operation hash, or a PSBT in hex")
    })?;
    let mut psbt = Psbt::deserialize(&bytes)
        .map_err(|e| bad(format!("signablePayload is not a PSBT: {e}")))?;
    let secp = Secp256k1::new();
    let xpriv = Xpriv::decode(xprv)
        .map_err(|_| ProviderError::StoredKey("the stored key is not an xprv".to_owned()))?;
    let fingerprint = xpriv.fingerprint(&secp);
    let mut named = 0usize;
    for (i, input) in psbt.inputs.iter().enumerate() {
        let ecdsa = input
            .bip32_derivation
            .iter()
            .map(|(pk, source)| (bitcoin::PublicKey::new(*pk), source));
        for (pk, (fp, path)) in ecdsa {
            if *fp != fingerprint {
                continue;
            }
            let child = xpriv
                .derive_priv(&secp, path)
                .map_err(|e| bad(format!("input {i}: {e}")))?;
            if child.to_priv().public_key(&secp) != pk {
                return Err(bad(format!(
                    "input {i}: the derivation {path} under this key's fingerprint does not lead to the public key it lists"
                )));
            }
            named += 1;
        }
        let tap: Vec<&KeySource> = input.tap_key_origins.values().map(|(_, s)| s).collect();
        named += tap.iter().filter(|(fp, _)| *fp == fingerprint).count();
    }
    if named == 0 {
        return Err(bad(format!(
            "no input of this PSBT names this key's fingerprint {fingerprint} in its BIP-32 derivations"
        )));
    }
    let own = OwnKey {
        xpriv: &xpriv,
        fingerprint,
    };
    if let Err((_, errors)) = psbt.sign(&own, &secp) {
        let detail = errors
            .iter()
            .map(|(i, e)| format!("input {i}: {e}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(bad(format!("the PSBT cannot be signed: {detail}")));
    }
    Ok(kms_crypto::hex(&psbt.serialize()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::str::FromStr;

    use bitcoin::bip32::{DerivationPath, Xpub};
    use bitcoin::blockdata::script::Builder;
    use bitcoin::hashes::Hash;
    use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_PUSHNUM_2, OP_PUSHNUM_3};
    use bitcoin::sighash::{EcdsaSighashType, SighashCache};
    use bitcoin::{
        absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
        Txid, Witness,
    };

    use super::*;

    fn xpriv(seed: u8) -> Xpriv {
        Xpriv::new_master(bitcoin::NetworkKind::Main, &[seed; 32]).unwrap()
    }

    /// A 2-of-3 P2WSH input as BitGo builds them: witness UTXO, witness
    /// script and a BIP-32 derivation for each of the three keys.
    fn two_of_three(keys: &[Xpriv; 3], path: &str) -> (Psbt, ScriptBuf) {
        let secp = Secp256k1::new();
        let path = DerivationPath::from_str(path).unwrap();
        let children: Vec<bitcoin::PublicKey> = keys
            .iter()
            .map(|k| {
                k.derive_priv(&secp, &path)
                    .unwrap()
                    .to_priv()
                    .public_key(&secp)
            })
            .collect();
        let script = Builder::new()
            .push_opcode(OP_PUSHNUM_2)
            .push_key(&children[0])
            .push_key(&children[1])
            .push_key(&children[2])
            .push_opcode(OP_PUSHNUM_3)
            .push_opcode(OP_CHECKMULTISIG)
            .into_script();
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(Txid::all_zeros(), 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(90_000),
                script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
            }],
        };
        let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
        psbt.inputs[0].witness_utxo = Some(TxOut {
            value: Amount::from_sat(100_000),
            script_pubkey: ScriptBuf::new_p2wsh(&script.wscript_hash()),
        });
        psbt.inputs[0].witness_script = Some(script.clone());
        let mut derivations = BTreeMap::new();
        for (k, child) in keys.iter().zip(&children) {
            derivations.insert(child.inner, (k.fingerprint(&secp), path.clone()));
        }
        psbt.inputs[0].bip32_derivation = derivations;
        psbt.unknown.insert(
            bitcoin::psbt::raw::Key {
                type_value: 0xf0,
                key: b"kept".to_vec(),
            },
            b"as it was".to_vec(),
        );
        psbt.inputs[0].proprietary.insert(
            bitcoin::psbt::raw::ProprietaryKey {
                prefix: b"BITGO".to_vec(),
                subtype: 1,
                key: b"kept".to_vec(),
            },
            b"too".to_vec(),
        );
        (psbt, script)
    }

    #[test]
    fn signs_every_input_naming_the_key_and_keeps_the_rest() {
        let keys = [xpriv(1), xpriv(2), xpriv(3)];
        let (psbt, script) = two_of_three(&keys, "m/0/0/0/7");
        let hex = kms_crypto::hex(&psbt.serialize());
        let user = Xpriv::encode(&keys[0]);
        let signed = sign_psbt(&user, &hex).unwrap();
        let once = Psbt::deserialize(&kms_crypto::unhex(&signed).unwrap()).unwrap();
        assert_eq!(once.inputs[0].partial_sigs.len(), 1);
        assert_eq!(once.unknown, psbt.unknown);
        assert_eq!(once.inputs[0].proprietary, psbt.inputs[0].proprietary);
        assert_eq!(once.unsigned_tx, psbt.unsigned_tx);
        // The signature verifies over the input's SegWit v0 sighash.
        let secp = Secp256k1::new();
        let (pk, sig) = once.inputs[0].partial_sigs.iter().next().unwrap();
        assert_eq!(sig.sighash_type, EcdsaSighashType::All);
        let sighash = SighashCache::new(&once.unsigned_tx)
            .p2wsh_signature_hash(0, &script, Amount::from_sat(100_000), EcdsaSighashType::All)
            .unwrap();
        let msg = bitcoin::secp256k1::Message::from_digest(sighash.to_byte_array());
        secp.verify_ecdsa(&msg, &sig.signature, &pk.inner).unwrap();
        let xpub = Xpub::from_priv(&secp, &keys[0]);
        let child = xpub
            .derive_pub(&secp, &DerivationPath::from_str("m/0/0/0/7").unwrap())
            .unwrap();
        assert_eq!(pk.inner, child.public_key);
        // The backup key adds its own signature to the user's PSBT.
        let twice = sign_psbt(&Xpriv::encode(&keys[1]), &signed).unwrap();
        let twice = Psbt::deserialize(&kms_crypto::unhex(&twice).unwrap()).unwrap();
        assert_eq!(twice.inputs[0].partial_sigs.len(), 2);
    }

    #[test]
    fn refusals() {
        let keys = [xpriv(1), xpriv(2), xpriv(3)];
        let (psbt, _) = two_of_three(&keys, "m/0/0/0/7");
        let hex = kms_crypto::hex(&psbt.serialize());
        let stranger = Xpriv::encode(&xpriv(9));
        let is_bad =
            |r: Result<String, ProviderError>| matches!(r, Err(ProviderError::BadRequest(_)));
        assert!(is_bad(sign_psbt(&stranger, &hex)), "no input names it");
        assert!(is_bad(sign_psbt(&Xpriv::encode(&keys[0]), "70736274ff")));
        assert!(is_bad(sign_psbt(&Xpriv::encode(&keys[0]), "zz")));
        assert!(is_bad(sign_psbt(&Xpriv::encode(&keys[0]), "abc")));
        // A derivation under our fingerprint that lists another key.
        let mut lying = psbt.clone();
        let secp = Secp256k1::new();
        let other = xpriv(8).to_priv().public_key(&secp).inner;
        let ours = keys[0].fingerprint(&secp);
        lying.inputs[0]
            .bip32_derivation
            .retain(|_, (fp, _)| *fp != ours);
        lying.inputs[0].bip32_derivation.insert(
            other,
            (ours, DerivationPath::from_str("m/0/0/0/7").unwrap()),
        );
        let r = sign_psbt(
            &Xpriv::encode(&keys[0]),
            &kms_crypto::hex(&lying.serialize()),
        );
        assert!(is_bad(r));
        // No previous output: the sighash cannot be computed.
        let mut blind = psbt.clone();
        blind.inputs[0].witness_utxo = None;
        let r = sign_psbt(
            &Xpriv::encode(&keys[0]),
            &kms_crypto::hex(&blind.serialize()),
        );
        assert!(is_bad(r));
    }
}
