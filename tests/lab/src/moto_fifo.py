"""moto's server, with its SQS FIFO queues made to behave like SQS's.

Four fixes for FIFO queues, two for IAM (5 and 6) and one for speed (7,
below); everything
else is moto's own code.

1. Receive keeps per-group order. moto 5.2.5 decides whether a message group is locked from a snapshot of the
groups with messages in flight, and refreshes that snapshot in the middle of
a receive pass. When a delete lands during a pass, the pass can skip a
group's earlier message (locked by the snapshot) and then hand out a later
one of the same group (unlocked by the refresh). Real SQS never returns a
later message of a group before an earlier one. This launcher keeps a group
skipped for the rest of a pass once one of its messages was skipped.

2. Deduplication holds for its whole 5-minute interval, atomically. moto
checks a new message's deduplication id against the messages still in the
queue and appends it afterwards, with nothing held in between: two sends of
the same id on two server threads can both land (the drill once saw a
customer's refresh queued twice 200 ms apart while moto was busy). It also
forgets an id once its message is deleted, where SQS keeps refusing it for
the interval. And `delete_message` rebuilds the message list, so a send
landing during a delete could vanish. Here one lock covers sends and
deletes, and each queue remembers the ids it took for the interval.

3. A long poll waits instead of spinning. moto's long poll waits for "a
visible message", so while every visible message sits in a group with one
in flight it rescans the queue without pause and holds the interpreter: one
waiting receive took a core and slowed every other call (sends, deletes,
DynamoDB): a send took 78 ms on average (p95 251 ms) instead of 6 ms. Here
it looks again every POLL_PAUSE_SECS, which also notices within that pause a
message whose visibility timeout ran out (moto's own wait takes a second).

4. A delete unlocks its group for a long poll already waiting. moto decides
which groups are locked once, when a receive starts, so a poll waiting
behind a locked group stayed blind to its unlocking until the wait ended:
the worker's 20 s. A drill's last write once reached the CRM 27 s after the
CRM came back, its message visible and unclaimed for the last 20. Here
each pass looks at the groups anew.

Run as: python -c "<this file>" -H 127.0.0.1 -p PORT
"""

import sys
import threading
import time
from collections import OrderedDict
from copy import deepcopy

import moto
from moto.sqs import models
from moto.core.utils import unix_time

if moto.__version__ != "5.2.5":
    sys.stderr.write(f"moto_fifo: written for moto 5.2.5, found {moto.__version__}\n")


def receive_message(self, queue_name, count, wait_seconds_timeout, visibility_timeout, message_attribute_names=None):
    if message_attribute_names is None:
        message_attribute_names = []
    queue = self.get_queue(queue_name)
    result = []
    previous_result_count = len(result)

    polling_end = unix_time() + wait_seconds_timeout

    while True:
        if result or (wait_seconds_timeout and unix_time() > polling_end):
            break

        # Fix 4: the locked groups as of this pass, not of the receive's start.
        currently_pending_groups = set(queue.pending_message_groups)

        messages_to_dlq = []
        # The fix: a group skipped once in this pass stays skipped.
        skipped_groups = set()

        # Fix 7: one clock read a pass, not two a message.
        now = now_millis()
        for message in [m for m in queue._messages if m.delayed_until <= now]:
            if message.visible_at >= now:
                if message.group_id:
                    skipped_groups.add(message.group_id)
                continue

            if message in queue.pending_messages:
                queue.pending_messages.remove(message)
                currently_pending_groups = set(queue.pending_message_groups)

            if message.group_id and queue.fifo_queue:
                if message.group_id in currently_pending_groups or message.group_id in skipped_groups:
                    skipped_groups.add(message.group_id)
                    continue

            if (
                queue.dead_letter_queue is not None
                and queue.redrive_policy
                and message.approximate_receive_count >= queue.redrive_policy["maxReceiveCount"]
            ):
                messages_to_dlq.append(message)
                continue

            queue.pending_messages.add(message)
            message.mark_received(visibility_timeout=visibility_timeout)
            message_copy = deepcopy(message)
            models._filter_message_attributes(message_copy, message_attribute_names)
            if not self.is_message_valid_based_on_retention_period(queue_name, message):
                break
            result.append(message_copy)
            if len(result) >= count:
                break

        with MESSAGES:
            for message in messages_to_dlq:
                queue._messages.remove(message)
        for message in messages_to_dlq:
            queue.dead_letter_queue.add_message(message)

        if previous_result_count == len(result):
            if wait_seconds_timeout == 0:
                break
            if visible_count(queue):
                # Visible, but every one behind a message of its group in flight.
                time.sleep(POLL_PAUSE_SECS)
            else:
                queue.wait_for_messages(POLL_PAUSE_SECS)
            continue

        previous_result_count = len(result)

    return result


models.SQSBackend.receive_message = receive_message

# How often a waiting long poll looks at the queue again.
POLL_PAUSE_SECS = 0.05

# Sends, deletes and dead-letter moves of every queue, one at a time (moto's
# server runs each request on its own thread).
MESSAGES = threading.RLock()
DEDUP_INTERVAL_MS = models.DEDUPLICATION_TIME_IN_SECONDS * 1000
moto_add_message = models.Queue.add_message
moto_delete_message = models.Queue.delete_message


def add_message(self, message):
    with MESSAGES:
        if self.fifo_queue and message.deduplication_id:
            # id -> when first sent (ms), oldest first.
            taken = self.__dict__.setdefault("failsoft_dedup", OrderedDict())
            now = message.sent_timestamp
            while taken and now - next(iter(taken.values())) >= DEDUP_INTERVAL_MS:
                taken.popitem(last=False)
            if message.deduplication_id in taken:
                return
            taken[message.deduplication_id] = now
        if self.lambda_event_source_mappings:
            moto_add_message(self, message)
            return
        # Fix 7: moto's own add looked through every queued message for the
        # id (and counted them all twice): the ids taken above are the
        # interval's, so that look is not needed.
        with self._messages_lock:
            self._messages.append(message)
            self._messages_lock.notify_all()


def delete_message(self, receipt_handle):
    with MESSAGES:
        moto_delete_message(self, receipt_handle)


models.Queue.add_message = add_message
models.Queue.delete_message = delete_message

# 7. What a call costs does not grow with the queue's depth. moto counted
# every message of a queue, reading the clock twice for each, whenever it
# looked at one of the queue's attributes: twice a send, once per message a
# receive hands out, besides scanning all messages for a send's
# deduplication id. At 3,000 queued messages a send took 158 ms and a
# receive 1.3 s, so a backlog behind an open breaker slowed the edge's sends
# past their share of the deadline (the 8-minute drill). Here each count
# reads the clock once, a receive's retention check reads the queue's
# setting, and a send checks its id against the interval's ids (fix 2).


def now_millis():
    return time.time() * 1000.0


def visible_count(queue):
    now = now_millis()
    return sum(1 for m in queue._messages if m.visible_at < now and m.delayed_until <= now)


def in_flight_count(queue):
    now = now_millis()
    return sum(1 for m in queue._messages if m.visible_at >= now)


def delayed_count(queue):
    now = now_millis()
    return sum(1 for m in queue._messages if m.delayed_until > now)


def visible_messages(queue):
    now = now_millis()
    return [m for m in queue._messages if m.visible_at < now and m.delayed_until <= now]


def retained(self, queue_name, message):
    period = int(self.get_queue(queue_name).message_retention_period)
    return message.sent_timestamp / 1000 + period > time.time()


models.Queue.approximate_number_of_messages = property(visible_count)
models.Queue.approximate_number_of_messages_not_visible = property(in_flight_count)
models.Queue.approximate_number_of_messages_delayed = property(delayed_count)
models.Queue.messages = property(visible_messages)
models.SQSBackend.is_message_valid_based_on_retention_period = retained

# 5. (IAM on) A batch call is authorised as its single call. SQS checks
# SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch
# against sqs:SendMessage, sqs:DeleteMessage and sqs:ChangeMessageVisibility
# (IAM has no "…Batch" action); moto asked for sqs:…Batch, which no policy
# grants, so the worker's visibility heartbeat was refused.
from moto.iam import access_control  # noqa: E402

moto_iam_request_init = access_control.IAMRequestBase.__init__


def iam_request_init(self, *args, **kwargs):
    moto_iam_request_init(self, *args, **kwargs)
    if self._action.startswith("sqs:") and self._action.endswith("Batch"):
        self._action = self._action[: -len("Batch")]


access_control.IAMRequestBase.__init__ = iam_request_init

# 6. (IAM on) A DynamoDB call is authorised against its tables. moto checked
# every DynamoDB call against the resource "*", which a policy naming its
# tables' ARNs (the template's) never matches: every call was refused. Here
# the resource is the table's ARN, and a BatchWriteItem or BatchGetItem is
# checked against each of its tables, as DynamoDB does.
from moto import settings  # noqa: E402
from moto.core import authorization  # noqa: E402
from moto.dynamodb import responses as dynamodb_responses  # noqa: E402


def dynamodb_resource(self):
    body = self.body if isinstance(self.body, dict) else {}
    tables = list(body.get("RequestItems") or {}) or [body[k] for k in ("TableName",) if body.get(k)]
    arns = [t if t.startswith("arn:") else f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{t}" for t in tables]
    return arns or "*"


def dynamodb_authorize(self, resource="*"):
    mixin = authorization.ActionAuthenticatorMixin
    if isinstance(resource, list) and mixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT:
        for arn in resource:
            mixin._authenticate_and_authorize_normal_action(self, arn)
    else:
        mixin._authenticate_and_authorize_normal_action(self, resource[0] if isinstance(resource, list) else resource)


dynamodb_responses.DynamoHandler._determine_resource = dynamodb_resource
dynamodb_responses.DynamoHandler._authenticate_and_authorize_normal_action = dynamodb_authorize

from moto.server import main  # noqa: E402

sys.argv = ["moto_server", *sys.argv[1:]]
main()
