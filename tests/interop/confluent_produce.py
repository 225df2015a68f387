"""Produce billing events with Confluent's own Python client (confluent-kafka) and its
AvroSerializer, against ledgerflow's schema registry and a Kafka-protocol broker.

This is the interoperability proof: a serializer that is not ours registers the contract
under TopicRecordNameStrategy and frames the records; `ledgerflow tail` must decode them.

usage: confluent_produce.py BROKERS REGISTRY_URL TOPIC SCHEMA_FILE COUNT OUT_JSON
Writes the produced events (as dicts) to OUT_JSON so the caller can compare.
"""

import json
import sys
import uuid

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry import topic_record_subject_name_strategy
from confluent_kafka.serialization import MessageField, SerializationContext


def main() -> int:
    brokers, registry_url, topic, schema_file, count, out = sys.argv[1:7]
    with open(schema_file, encoding="utf-8") as f:
        schema_str = f.read()
    registry = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(
        registry,
        schema_str,
        conf={
            "auto.register.schemas": True,
            "subject.name.strategy": topic_record_subject_name_strategy,
        },
    )
    producer = Producer({"bootstrap.servers": brokers, "partitioner": "murmur2_random"})
    events = []
    for i in range(int(count)):
        tenant = f"py{i % 3:03d}"
        amount = 1000 + i
        fee = i % 7
        event = {
            "event_id": str(uuid.UUID(int=0x5EED0000000040008000000000000000 + i)),
            "tenant_id": tenant,
            "occurred_at": 1767225600000000 + i * 1_000_000,
            "correlation_id": f"corr-{i}",
            "causation_id": None,
            "source": "python-confluent-kafka",
            "payment_id": f"pay-{i}",
            "invoice_id": f"inv-{i}",
            "customer_id": f"cus-{i % 5}",
            "currency": "EUR",
            "amount_minor": amount,
            "fee_minor": fee,
            "method": "card",
            "processor_reference": f"ch_{i:08d}",
            "captured_at": 1767225600000000 + i * 1_000_000,
        }
        if "settlement_currency" in schema_str:
            event["settlement_currency"] = "USD" if i % 2 else None
        value = serializer(event, SerializationContext(topic, MessageField.VALUE))
        producer.produce(topic, key=tenant.encode(), value=value,
                         headers=[("tenant_id", tenant.encode())])
        events.append(event)
    remaining = producer.flush(30)
    if remaining:
        print(f"{remaining} records not delivered", file=sys.stderr)
        return 1
    with open(out, "w", encoding="utf-8") as f:
        json.dump(events, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
