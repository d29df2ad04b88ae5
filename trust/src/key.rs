//! Keys in cosign's format: an ECDSA P-256 private key sealed with a password (scrypt, then
//! nacl/secretbox over its PKCS#8 DER, as JSON in a PEM), and its public key as a PEM
//! SubjectPublicKeyInfo. Files cosign writes are read, and cosign reads the files written here.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use sha2::{Digest as _, Sha256};

/// The label cosign writes today.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label older cosign releases wrote; still read.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// cosign's scrypt cost (N = 2^15, r = 8, p = 1); 2^16 is also read, as cosign does.
const SCRYPT_LOG_N: u8 = 15;
const SCRYPT_R: u32 = 8;
const SCRYPT_P: u32 = 1;
/// An encrypted key file is a few hundred bytes; a larger one is not read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Why a key cannot be used; the caller names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not a PEM block of a kind read here.
    #[error("{0}")]
    Format(String),
    /// The password does not open the key.
    #[error(
        "the password does not decrypt it (set COSIGN_PASSWORD or pass --password-stdin with the password it was made with)"
    )]
    WrongPassword,
    /// An encrypted key and no password.
    #[error("it is encrypted: set COSIGN_PASSWORD or pass --password-stdin")]
    NeedsPassword,
}

/// A signing key: ECDSA P-256, as cosign makes by default.
pub struct PrivateKey {
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

/// A verification key, with the fingerprint verdicts name it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    fingerprint: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Cipher {
    name: String,
    nonce: String,
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate as _;
        Self {
            key: SigningKey::generate(),
        }
    }

    /// Reads a key file's text: cosign's encrypted PEM (either label), opened with
    /// `password()`, or a plain PKCS#8 `PRIVATE KEY` / SEC1 `EC PRIVATE KEY` PEM.
    pub fn from_pem(
        pem: &[u8],
        password: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Self, KeyError> {
        let text = pem_text(pem)?;
        let (label, der) = p256::pkcs8::der::pem::decode_vec(text.trim().as_bytes())
            .map_err(|e| KeyError::Format(format!("it is not a PEM key: {e}")))?;
        let key = match label {
            SIGSTORE_PRIVATE_KEY_LABEL | COSIGN_PRIVATE_KEY_LABEL => {
                let password = password().ok_or(KeyError::NeedsPassword)?;
                let pkcs8 = open(&der, &password)?;
                SigningKey::from_pkcs8_der(&pkcs8).map_err(|e| {
                    KeyError::Format(format!("its sealed key is not P-256 PKCS#8: {e}"))
                })?
            }
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der)
                .map_err(|e| KeyError::Format(format!("not an ECDSA P-256 PKCS#8 key: {e}")))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
                .map(SigningKey::from)
                .map_err(|e| KeyError::Format(format!("not an ECDSA P-256 SEC1 key: {e}")))?,
            other => {
                return Err(KeyError::Format(format!(
                    "a PEM {:?} block is not a private key read here (expected {SIGSTORE_PRIVATE_KEY_LABEL}, {COSIGN_PRIVATE_KEY_LABEL}, PRIVATE KEY or EC PRIVATE KEY)",
                    wasm_oci_artifact::printable(other)
                )));
            }
        };
        Ok(Self { key })
    }

    /// The key sealed with `password` as cosign seals it, in a PEM labelled as cosign
    /// labels it today.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> String {
        let pkcs8 = self
            .key
            .to_pkcs8_der()
            .expect("a P-256 key always encodes as PKCS#8");
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut salt).expect("the OS has randomness");
        getrandom::fill(&mut nonce).expect("the OS has randomness");
        let key = derive(password, &salt, SCRYPT_LOG_N).expect("cosign's parameters are valid");
        let ciphertext = crypto_secretbox::XSalsa20Poly1305::new(&key.into())
            .encrypt(&nonce.into(), pkcs8.as_bytes())
            .expect("sealing in memory does not fail");
        let sealed = Sealed {
            kdf: Kdf {
                name: "scrypt".into(),
                params: ScryptParams {
                    n: 1 << SCRYPT_LOG_N,
                    r: SCRYPT_R,
                    p: SCRYPT_P,
                },
                salt: BASE64.encode(salt),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: BASE64.encode(nonce),
            },
            ciphertext: BASE64.encode(ciphertext),
        };
        let json = serde_json::to_vec(&sealed).expect("json serializes");
        p256::pkcs8::der::pem::encode_string(SIGSTORE_PRIVATE_KEY_LABEL, LineEnding::LF, &json)
            .expect("PEM encodes")
    }

    /// Its public key.
    pub fn public(&self) -> PublicKey {
        PublicKey::new(*self.key.verifying_key())
    }

    /// An ECDSA P-256 SHA-256 signature of `payload`, ASN.1 DER, as cosign writes them.
    pub fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(payload);
        signature.to_der().as_bytes().to_vec()
    }
}

impl PublicKey {
    fn new(key: VerifyingKey) -> Self {
        let der = key.to_public_key_der().expect("a P-256 key always encodes");
        Self {
            key,
            fingerprint: hex::encode(Sha256::digest(der.as_bytes())),
        }
    }

    /// Reads a `PUBLIC KEY` PEM (SubjectPublicKeyInfo) of an ECDSA P-256 key.
    pub fn from_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let text = pem_text(pem)?;
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Self::new)
            .map_err(|e| {
                KeyError::Format(format!(
                    "it is not an ECDSA P-256 public key PEM (PUBLIC KEY): {e}"
                ))
            })
    }

    /// The key as a `PUBLIC KEY` PEM.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 key always encodes")
    }

    /// SHA-256 of its DER SubjectPublicKeyInfo, in hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` (ASN.1 DER, or the 64-byte fixed form) is this key's over
    /// `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let parsed = Signature::from_der(signature)
            .ok()
            .or_else(|| Signature::from_slice(signature).ok());
        parsed.is_some_and(|s| self.key.verify(payload, &s).is_ok())
    }
}

fn derive(password: &[u8], salt: &[u8], log_n: u8) -> Result<[u8; 32], KeyError> {
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P)
        .map_err(|e| KeyError::Format(format!("scrypt parameters: {e}")))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut key)
        .map_err(|e| KeyError::Format(format!("scrypt: {e}")))?;
    Ok(key)
}

/// Opens the JSON body of cosign's encrypted PEM. Only cosign's own parameters are
/// accepted: a file that asks for a huge scrypt cost is refused, not obeyed.
fn open(body: &[u8], password: &[u8]) -> Result<Vec<u8>, KeyError> {
    let bad = |what: &str| KeyError::Format(format!("its encrypted body is invalid: {what}"));
    let sealed: Sealed = serde_json::from_slice(body).map_err(|e| bad(&e.to_string()))?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(bad("not scrypt with nacl/secretbox"));
    }
    let log_n = match sealed.kdf.params.n {
        32768 => 15,
        65536 => 16,
        _ => return Err(bad("scrypt N is not cosign's 32768 or 65536")),
    };
    if (sealed.kdf.params.r, sealed.kdf.params.p) != (SCRYPT_R, SCRYPT_P) {
        return Err(bad("scrypt r and p are not cosign's 8 and 1"));
    }
    let salt = BASE64.decode(&sealed.kdf.salt).map_err(|_| bad("salt"))?;
    let nonce: [u8; 24] = BASE64
        .decode(&sealed.cipher.nonce)
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| bad("nonce"))?;
    let ciphertext = BASE64
        .decode(&sealed.ciphertext)
        .map_err(|_| bad("ciphertext"))?;
    let key = derive(password, &salt, log_n)?;
    crypto_secretbox::XSalsa20Poly1305::new(&key.into())
        .decrypt(&nonce.into(), ciphertext.as_slice())
        .map_err(|_| KeyError::WrongPassword)
}

/// A key file's bytes as PEM text, refused when larger than any key file is.
fn pem_text(pem: &[u8]) -> Result<&str, KeyError> {
    if pem.len() as u64 > MAX_KEY_FILE {
        return Err(KeyError::Format(format!(
            "it is {} bytes; key files are a few hundred",
            pem.len()
        )));
    }
    std::str::from_utf8(pem).map_err(|_| KeyError::Format("it is not a PEM text file".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_key_opens_with_its_password_only() {
        let key = PrivateKey::generate();
        let pem = key.to_encrypted_pem(b"s3cret");
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let again = PrivateKey::from_pem(pem.as_bytes(), || Some(b"s3cret".to_vec())).unwrap();
        assert_eq!(again.public(), key.public());
        assert!(matches!(
            PrivateKey::from_pem(pem.as_bytes(), || Some(b"wrong".to_vec())),
            Err(KeyError::WrongPassword)
        ));
        assert!(matches!(
            PrivateKey::from_pem(pem.as_bytes(), || None),
            Err(KeyError::NeedsPassword)
        ));
        // The older label holds the same body.
        let old = pem.replace("SIGSTORE", "COSIGN");
        assert!(PrivateKey::from_pem(old.as_bytes(), || Some(b"s3cret".to_vec())).is_ok());
    }

    #[test]
    fn signatures_verify_with_the_public_key_only() {
        let key = PrivateKey::generate();
        let signature = key.sign(b"payload");
        let public = PublicKey::from_pem(key.public().to_pem().as_bytes()).unwrap();
        assert!(public.verifies(b"payload", &signature));
        assert!(!public.verifies(b"payload!", &signature));
        assert!(
            !PrivateKey::generate()
                .public()
                .verifies(b"payload", &signature)
        );
        assert!(!public.verifies(b"payload", b"garbage"));
    }

    #[test]
    fn a_key_file_asking_for_another_scrypt_cost_is_refused_unopened() {
        let pem = PrivateKey::generate().to_encrypted_pem(b"pw");
        let (label, body) = p256::pkcs8::der::pem::decode_vec(pem.as_bytes()).unwrap();
        let mut sealed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // 2^30: gigabytes of memory and minutes of CPU if obeyed.
        sealed["kdf"]["params"]["N"] = serde_json::json!(1u64 << 30);
        let evil = p256::pkcs8::der::pem::encode_string(
            label,
            LineEnding::LF,
            &serde_json::to_vec(&sealed).unwrap(),
        )
        .unwrap();
        let e = PrivateKey::from_pem(evil.as_bytes(), || Some(b"pw".to_vec())).unwrap_err();
        assert!(e.to_string().contains("32768"), "{e}");
    }

    #[test]
    fn plain_pkcs8_keys_are_read() {
        let key = PrivateKey::generate();
        let pem = key.key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let read = PrivateKey::from_pem(pem.as_bytes(), || None).unwrap();
        assert_eq!(read.public(), key.public());
    }
}
