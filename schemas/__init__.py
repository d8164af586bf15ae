"""Avro schemas of Interlock's Kafka records and their codec (see schemas/README.md).

`schemas.codec` frames and reads messages (checked by `schemas.checks`), `schemas.records` maps
domain commands and events to records, `schemas.compat` checks that a new schema version can
read the old ones.
"""
