//! SQS queue on aws-sdk-sqs: long poll (up to 20 s), batch send/receive/delete of 10, change visibility for
//! heartbeat and backoff, FIFO group and de-duplication ids, approximate counts. The DLQ is
//! the queue's RedrivePolicy target; dead-lettering at once, listing and redrive use receive
//! + send + delete (which works on every SQS, and on local servers without move tasks).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use super::{Counts, DeadLetter, MAX_BODY_BYTES, Message, Queue, QueueError, SendOptions};
use crate::aws::{describe, is_transient};

/// Message attribute carrying the reason of a dead letter.
pub const REASON_ATTRIBUTE: &str = "pixq-reason";

/// A queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    dlq_url: Option<String>,
    fifo: bool,
    max_receives: u32,
}

fn err<E, R>(op: &str, e: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> QueueError
where
    E: std::error::Error + aws_smithy_types::error::metadata::ProvideErrorMetadata + 'static,
    R: crate::aws::HttpStatus + std::fmt::Debug,
{
    let msg = format!("SQS {op}: {}", describe(&e));
    if is_transient(&e) { QueueError::Transient(msg) } else { QueueError::Permanent(msg) }
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl SqsQueue {
    /// Opens a queue by URL. The dead-letter queue and max receives come from its
    /// RedrivePolicy (`dlq_url` overrides the target); FIFO from the `.fifo` suffix.
    pub async fn open(client: aws_sdk_sqs::Client, url: &str, dlq_url: Option<String>) -> Result<SqsQueue, QueueError> {
        let attrs = client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::RedrivePolicy)
            .send()
            .await
            .map_err(|e| err("GetQueueAttributes", e))?;
        let policy: Option<serde_json::Value> = attrs
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .and_then(|p| serde_json::from_str(p).ok());
        let max_receives = policy
            .as_ref()
            .and_then(|p| p.get("maxReceiveCount"))
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .unwrap_or(5) as u32;
        let dlq_url =
            match (dlq_url, policy.as_ref().and_then(|p| p.get("deadLetterTargetArn")).and_then(|v| v.as_str())) {
                (Some(u), _) => Some(u),
                (None, Some(arn)) => {
                    // arn:aws:sqs:region:account:name -> URL via GetQueueUrl.
                    let name = arn.rsplit(':').next().unwrap_or_default();
                    let owner = arn.split(':').nth(4).map(String::from);
                    client
                        .get_queue_url()
                        .queue_name(name)
                        .set_queue_owner_aws_account_id(owner)
                        .send()
                        .await
                        .ok()
                        .and_then(|o| o.queue_url().map(String::from))
                }
                (None, None) => None,
            };
        Ok(SqsQueue { client, url: url.to_string(), dlq_url, fifo: url.ends_with(".fifo"), max_receives })
    }

    /// The queue URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue URL, if any.
    pub fn dlq_url(&self) -> Option<&str> {
        self.dlq_url.as_deref()
    }

    fn dlq(&self) -> Result<&str, QueueError> {
        self.dlq_url
            .as_deref()
            .ok_or_else(|| QueueError::Permanent(format!("queue {} has no dead-letter queue", self.url)))
    }

    fn check(&self, body: &str, o: &SendOptions) -> Result<(), QueueError> {
        if body.is_empty() || body.len() > MAX_BODY_BYTES {
            return Err(QueueError::Refused(format!("body is {} bytes (allowed 1..={MAX_BODY_BYTES})", body.len())));
        }
        if self.fifo && o.group_id.is_none() {
            return Err(QueueError::Refused("a FIFO queue needs a message group id".into()));
        }
        Ok(())
    }

    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, QueueError> {
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, 10) as i32)
            .visibility_timeout(secs(visibility))
            .wait_time_seconds(secs(wait).min(20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| err("ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default())
    }
}

fn to_message(m: aws_sdk_sqs::types::Message) -> Message {
    let attr = |n: MessageSystemAttributeName| m.attributes().and_then(|a| a.get(&n)).cloned();
    Message {
        id: m.message_id().unwrap_or_default().to_string(),
        receipt: m.receipt_handle().unwrap_or_default().to_string(),
        receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
        sent_at_ms: attr(MessageSystemAttributeName::SentTimestamp).and_then(|v| v.parse().ok()).unwrap_or(0),
        group_id: attr(MessageSystemAttributeName::MessageGroupId),
        body: m.body.unwrap_or_default(),
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, body: &str, o: &SendOptions) -> Result<String, QueueError> {
        self.check(body, o)?;
        let mut req = self.client.send_message().queue_url(&self.url).message_body(body);
        if !self.fifo {
            req = req.delay_seconds(secs(o.delay));
        }
        let out = req
            .set_message_group_id(o.group_id.clone())
            .set_message_deduplication_id(o.dedup_id.clone())
            .send()
            .await
            .map_err(|e| err("SendMessage", e))?;
        Ok(out.message_id().unwrap_or_default().to_string())
    }

    async fn send_batch(&self, entries: &[(String, SendOptions)]) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::with_capacity(entries.len());
        let mut start = 0;
        while start < entries.len() {
            // At most 10 entries and 256 KiB per request.
            let (mut end, mut bytes) = (start, 0);
            while end < entries.len() && end - start < 10 && bytes + entries[end].0.len() <= MAX_BODY_BYTES {
                bytes += entries[end].0.len();
                end += 1;
            }
            if end == start {
                end = start + 1; // a single over-size body: let check() refuse it
            }
            let mut batch = Vec::new();
            for (i, (body, o)) in entries[start..end].iter().enumerate() {
                self.check(body, o)?;
                let mut e = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .set_message_group_id(o.group_id.clone())
                    .set_message_deduplication_id(o.dedup_id.clone());
                if !self.fifo {
                    e = e.delay_seconds(secs(o.delay));
                }
                batch.push(e.build().map_err(|e| QueueError::Refused(e.to_string()))?);
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|e| err("SendMessageBatch", e))?;
            if let Some(f) = out.failed().first() {
                let msg = format!("SQS SendMessageBatch entry {}: {} {}", f.id(), f.code(), f.message().unwrap_or(""));
                return Err(if f.sender_fault() { QueueError::Refused(msg) } else { QueueError::Transient(msg) });
            }
            let mut ok: Vec<_> = out
                .successful()
                .iter()
                .map(|s| (s.id().parse::<usize>().unwrap_or(0), s.message_id().to_string()))
                .collect();
            ok.sort();
            ids.extend(ok.into_iter().map(|(_, id)| id));
            start = end;
        }
        Ok(ids)
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Message>, QueueError> {
        Ok(self.receive_from(&self.url, max, visibility, wait).await?.into_iter().map(to_message).collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| err("DeleteMessage", e))?;
        Ok(())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| QueueError::Refused(e.to_string()))?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| err("DeleteMessageBatch", e))?;
            if let Some(f) = out.failed().first() {
                let msg =
                    format!("SQS DeleteMessageBatch entry {}: {} {}", f.id(), f.code(), f.message().unwrap_or(""));
                return Err(if f.sender_fault() { QueueError::Permanent(msg) } else { QueueError::Transient(msg) });
            }
        }
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> Result<(), QueueError> {
        match self
            .client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs(timeout).min(43_200))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_receipt_handle_is_invalid() || s.is_message_not_inflight()) =>
            {
                Err(QueueError::ReceiptExpired)
            }
            Err(e) => Err(err("ChangeMessageVisibility", e)),
        }
    }

    async fn retry_later(&self, receipt: &str, delay: Duration, reason: &str) -> Result<(), QueueError> {
        // SQS keeps no reason with a message; the worker logs it and the last one goes with
        // the failure record if retries run out.
        tracing::debug!(%reason, "retry later");
        self.change_visibility(receipt, delay).await
    }

    async fn dead_letter(&self, msg: &Message, reason: &str) -> Result<(), QueueError> {
        let dlq = self.dlq()?;
        let reason: String = reason.chars().take(1000).collect();
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| QueueError::Refused(e.to_string()))?;
        let mut req = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(&msg.body)
            .message_attributes(REASON_ATTRIBUTE, attr);
        if dlq.ends_with(".fifo") {
            req = req
                .message_group_id(msg.group_id.clone().unwrap_or_else(|| "dlq".into()))
                .message_deduplication_id(&msg.id);
        }
        req.send().await.map_err(|e| err("SendMessage (dead letter)", e))?;
        self.delete(&msg.receipt).await
    }

    async fn counts(&self) -> Result<Counts, QueueError> {
        let get = |url: String| {
            self.client
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
                .send()
        };
        let a = get(self.url.clone()).await.map_err(|e| err("GetQueueAttributes", e))?;
        let n = |attrs: &Option<std::collections::HashMap<QueueAttributeName, String>>, k: QueueAttributeName| -> u64 {
            attrs.as_ref().and_then(|m| m.get(&k)).and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        let dead = match &self.dlq_url {
            Some(d) => {
                let d = get(d.clone()).await.map_err(|e| err("GetQueueAttributes (DLQ)", e))?;
                n(&d.attributes, QueueAttributeName::ApproximateNumberOfMessages)
                    + n(&d.attributes, QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            }
            None => 0,
        };
        Ok(Counts {
            visible: n(&a.attributes, QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: n(&a.attributes, QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: n(&a.attributes, QueueAttributeName::ApproximateNumberOfMessagesDelayed),
            dead,
        })
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, QueueError> {
        // Peek: receive with a short visibility and leave the messages where they are.
        let dlq = self.dlq()?.to_string();
        let mut seen = std::collections::HashSet::new();
        let mut receipts = Vec::new();
        let mut out = Vec::new();
        while out.len() < max {
            let got =
                self.receive_from(&dlq, (max - out.len()).min(10), Duration::from_secs(5), Duration::ZERO).await?;
            let mut new = 0;
            for m in got {
                let reason = m
                    .message_attributes()
                    .and_then(|a| a.get(REASON_ATTRIBUTE))
                    .and_then(|v| v.string_value())
                    .map(String::from)
                    .unwrap_or_else(|| "exceeded the queue's maxReceiveCount (no reason recorded)".into());
                let msg = to_message(m);
                receipts.push(msg.receipt.clone());
                if seen.insert(msg.id.clone()) {
                    new += 1;
                    out.push(DeadLetter {
                        id: msg.id,
                        body: msg.body,
                        reason,
                        receive_count: msg.receive_count,
                        died_at_ms: msg.sent_at_ms,
                    });
                }
            }
            if new == 0 {
                break;
            }
        }
        // Make what we peeked at visible again right away (for a redrive or the next look).
        for r in receipts {
            let _ = self
                .client
                .change_message_visibility()
                .queue_url(&dlq)
                .receipt_handle(r)
                .visibility_timeout(0)
                .send()
                .await;
        }
        Ok(out)
    }

    async fn redrive(&self, max: usize) -> Result<usize, QueueError> {
        let dlq = self.dlq()?.to_string();
        let mut moved = 0;
        while moved < max {
            let got = self.receive_from(&dlq, (max - moved).min(10), Duration::from_secs(60), Duration::ZERO).await?;
            if got.is_empty() {
                break;
            }
            for m in got {
                let msg = to_message(m);
                let opts = SendOptions {
                    group_id: self.fifo.then(|| msg.group_id.clone().unwrap_or_else(|| "redrive".into())),
                    dedup_id: self.fifo.then(|| format!("redrive-{}", msg.id)),
                    ..SendOptions::default()
                };
                self.send(&msg.body, &opts).await?;
                self.client
                    .delete_message()
                    .queue_url(&dlq)
                    .receipt_handle(&msg.receipt)
                    .send()
                    .await
                    .map_err(|e| err("DeleteMessage (DLQ)", e))?;
                moved += 1;
            }
        }
        Ok(moved)
    }

    fn max_receives(&self) -> u32 {
        self.max_receives
    }

    fn is_fifo(&self) -> bool {
        self.fifo
    }
}
