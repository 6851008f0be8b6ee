//! The request body as the edge reads it: media type, declared length, the body read within
//! its size cap and timeout, and an oversized body read and dropped so its sender sees the 413.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, header};
use http_body_util::BodyExt;

use crate::booking::pipeline::BoxError;
use crate::error::GatewayError;

/// `application/json`, with or without parameters (`; charset=utf-8`).
pub(crate) fn check_content_type(headers: &HeaderMap) -> Result<(), GatewayError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if ok {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType)
    }
}

pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Reads the whole body within `limit` bytes and `timeout` into a buffer of its own (`expected`
/// bytes reserved): the frames hyper hands over may be views into the connection's 8 to 16 KiB
/// read buffer, which a booking would otherwise pin for its whole MIS exchange.
pub(crate) async fn read_body<B>(
    body: B,
    limit: usize,
    expected: usize,
    timeout: Duration,
) -> Result<Bytes, GatewayError>
where
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let read = async {
        let mut buf = bytes::BytesMut::with_capacity(expected.min(limit));
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(GatewayError::MalformedJson {
                    detail: "Problem: the body could not be read to its end.".into(),
                });
            };
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(GatewayError::PayloadTooLarge { limit });
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    let result = match tokio::time::timeout(timeout, read).await {
        Err(_) => Err(GatewayError::BodyTimeout),
        Ok(r) => r,
    };
    if matches!(result, Err(GatewayError::PayloadTooLarge { .. })) {
        drain(body, timeout).await;
    }
    result
}

/// Past the size limit, what the client is still sending is read and dropped (up to
/// [`DRAIN_MAX`] bytes, within `timeout` and [`DRAIN_TIME`]) before the 413 goes out. A server that answers and
/// closes with unread data in its socket resets the connection, and the client may then see
/// the reset instead of the answer.
pub(crate) async fn drain<B>(body: B, timeout: Duration)
where
    B: http_body::Body<Data = Bytes> + Send,
{
    let mut body = std::pin::pin!(body);
    let _ = tokio::time::timeout(timeout.min(DRAIN_TIME), async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// How much of an oversized body is read and dropped so its sender gets the 413, and for how
/// long at most.
const DRAIN_MAX: usize = 1 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);
