//! The independent peer: the sigstore project's own Rust library (its cosign module) signs,
//! pushes, fetches and verifies key-based signatures, and reads and writes cosign's key files.

use sigstore::cosign::constraint::{Constraint as _, PrivateKeySigner};
use sigstore::cosign::verification_constraint::{PublicKeyVerifier, VerificationConstraint};
use sigstore::cosign::{ClientBuilder, CosignCapabilities as _, SignatureLayer};
use sigstore::crypto::SigningScheme;
use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::registry::oci_reference::OciReference;
use sigstore::registry::{Auth, ClientConfig, ClientProtocol};

fn client() -> sigstore::cosign::Client {
    ClientBuilder::default()
        .with_oci_client_config(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        })
        .build()
        .expect("a cosign client")
}

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A new ECDSA P-256 key pair: cosign's encrypted private key PEM and the public key PEM.
pub fn generate_key(password: &str) -> (String, String) {
    let signer = SigningScheme::ECDSA_P256_SHA256_ASN1
        .create_signer()
        .expect("a signer");
    let pair = signer.to_sigstore_keypair().expect("a key pair");
    (
        pair.private_key_to_encrypted_pem(password.as_bytes())
            .expect("encrypts")
            .to_string(),
        pair.public_key_to_pem().expect("public PEM"),
    )
}

/// Signs what `reference` resolves to with the encrypted key file `key_pem` and pushes the
/// signature as cosign does.
pub fn sign(reference: &str, key_pem: &str, password: &str) {
    let pair = SigStoreKeyPair::from_encrypted_pem(key_pem.as_bytes(), password.as_bytes())
        .expect("sigstore opens the key");
    let signer = pair
        .to_sigstore_signer(&SigningScheme::ECDSA_P256_SHA256_ASN1)
        .expect("a signer");
    let image: OciReference = reference.parse().expect("a reference");
    block_on(async {
        let mut client = client();
        let (sig_image, digest) = client
            .triangulate(&image, &Auth::Anonymous)
            .await
            .expect("triangulates");
        let mut layer = SignatureLayer::new_unsigned(&image, &digest).expect("a layer");
        assert!(
            PrivateKeySigner::new_with_signer(signer)
                .add_constraint(&mut layer)
                .expect("signs")
        );
        client
            .push_signature(None, &Auth::Anonymous, &sig_image, vec![layer])
            .await
            .expect("pushes the signature");
    });
}

/// How many signatures of `reference` the public key `pub_pem` verifies, by sigstore's own
/// fetching and checking (payload digest against the image's, signature against the key).
pub fn verified_signatures(reference: &str, pub_pem: &str) -> usize {
    let image: OciReference = reference.parse().expect("a reference");
    let layers = block_on(async {
        client()
            .trusted_signature_layers(&Auth::Anonymous, &image)
            .await
            .expect("fetches the signature layers")
    });
    let verifier =
        PublicKeyVerifier::new(pub_pem.as_bytes(), &SigningScheme::ECDSA_P256_SHA256_ASN1)
            .expect("a verifier");
    layers
        .iter()
        .filter(|l| verifier.verify(l).unwrap_or(false))
        .count()
}
