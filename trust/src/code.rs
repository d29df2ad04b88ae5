//! The gate's word on native code a registry offers for an image (precompiled code attached
//! to it as a referrer): unlike the image itself, which a scope may accept as it is, code is
//! loaded only when the scope names keys (`sigstoreSigned`) and one of them signed it.

use wasm_oci_cache::Verdict;

use crate::error::Refusal;
use crate::gate::Gate;
use crate::signatures::Fetched;

impl Gate<'_> {
    /// Whether native code whose artifact manifest is `signed_digest` may be loaded for this
    /// gate's image, given the signatures `found` of that digest: the verdicts of the valid
    /// ones, or why not. With no policy, or a scope that accepts anything, nobody vouches
    /// for the code, and it is refused ([`Refusal::CodeNeedsKeys`]); otherwise the scope's
    /// requirements decide, as for the image ([`Gate::judge`]).
    pub fn admit_code(
        &self,
        signed_digest: &str,
        found: Option<&Fetched>,
    ) -> Result<Vec<Verdict>, Refusal> {
        self.admit()?;
        if !self.needs_signatures() {
            return Err(Refusal::CodeNeedsKeys {
                scope: self.describe(),
            });
        }
        self.judge(signed_digest, found)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use crate::key::PrivateKey;
    use crate::policy::{Policy, SignedIdentity};
    use crate::{Gate, Refusal, signatures};

    fn fetched(key: &PrivateKey, identity: &str, digest: &str) -> signatures::Fetched {
        let payload = crate::payload::make(identity, digest);
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        let appended = signatures::append(None, &payload, &signature, &key.public()).unwrap();
        let layers = signatures::signature_layers(&appended.manifest).unwrap();
        signatures::Fetched {
            manifest_digest: wasm_oci_cache::Digest::of(&appended.manifest),
            manifest: appended.manifest,
            layers: layers
                .into_iter()
                .map(|l| {
                    (
                        l.digest,
                        crate::SignatureBlob {
                            payload: payload.clone(),
                            signature: l.signature,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn code_needs_a_key_the_policy_names() {
        let reference = wasm_oci_artifact::parse_reference("localhost:5000/app:v1").unwrap();
        let digest = format!("sha256:{}", "c".repeat(64));
        let key = PrivateKey::generate();
        let signed = fetched(&key, "localhost:5000/app", &digest);

        let anything = Policy::accept_anything();
        let e = Gate::new(&anything, &reference)
            .admit_code(&digest, Some(&signed))
            .unwrap_err();
        assert!(matches!(e, Refusal::CodeNeedsKeys { .. }), "{e}");

        let policy = Policy::requiring(vec![key.public()], SignedIdentity::MatchRepository);
        let gate = Gate::new(&policy, &reference);
        assert_eq!(gate.admit_code(&digest, Some(&signed)).unwrap().len(), 1);
        assert!(matches!(
            gate.admit_code(&digest, None),
            Err(Refusal::Unsigned)
        ));
        let other = fetched(&PrivateKey::generate(), "localhost:5000/app", &digest);
        assert!(matches!(
            gate.admit_code(&digest, Some(&other)),
            Err(Refusal::NoValidSignature(_))
        ));
        // A signature of other code.
        let elsewhere = format!("sha256:{}", "d".repeat(64));
        assert!(gate.admit_code(&elsewhere, Some(&signed)).is_err());
        // For another repository.
        let theirs = fetched(&key, "localhost:5000/other", &digest);
        assert!(gate.admit_code(&digest, Some(&theirs)).is_err());
    }
}
