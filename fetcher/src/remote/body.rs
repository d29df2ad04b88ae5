//! Every body a registry or its token service sends is read with a cap: [`read_at_most`].

use futures_util::StreamExt;

/// The body, or its first `limit` bytes; the rest is not read.
pub(crate) async fn read_at_most(
    response: reqwest::Response,
    limit: u64,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk?);
        if body.len() as u64 >= limit {
            body.truncate(limit as usize);
            break;
        }
    }
    Ok(body)
}
