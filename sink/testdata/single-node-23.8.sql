-- events
CREATE TABLE IF NOT EXISTS veil.events (
    project         LowCardinality(String),
    time            DateTime,
    time_ms         UInt16,
    event           LowCardinality(String),
    distinct_id     String,
    insert_id       String,
    received_at     DateTime CODEC(Delta, ZSTD(1)),
    country_code    LowCardinality(String),
    region          LowCardinality(String),
    city            LowCardinality(String),
    browser         LowCardinality(String),
    browser_version LowCardinality(String),
    os              LowCardinality(String),
    device          LowCardinality(String),
    lib             LowCardinality(String),
    lib_version     LowCardinality(String),
    properties      String CODEC(ZSTD(1)),
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, toDate(time), event, distinct_id, time, insert_id)
SETTINGS non_replicated_deduplication_window = 1000;
-- events_dedup view
CREATE VIEW IF NOT EXISTS veil.events_dedup AS SELECT * FROM veil.events FINAL;
-- profiles
CREATE TABLE IF NOT EXISTS veil.profile_ops (
    project         LowCardinality(String),
    distinct_id     String,
    time            DateTime,
    time_ms         UInt16,
    op              LowCardinality(String),
    operand         String CODEC(ZSTD(1)),
    modifiers       String CODEC(ZSTD(1)),
    insert_id       String,
    received_at     DateTime CODEC(Delta, ZSTD(1)),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, distinct_id, time, insert_id, op)
SETTINGS non_replicated_deduplication_window = 1000;
CREATE TABLE IF NOT EXISTS veil.profile_state (
    project         LowCardinality(String),
    distinct_id     String,
    property        String,
    value           String CODEC(ZSTD(1)),
    value_json      String CODEC(ZSTD(1)),
    value_type      LowCardinality(String),
    deleted         UInt8,
    set_at          DateTime,
    version         UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    updated_at      DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project, distinct_id, property);
CREATE VIEW IF NOT EXISTS veil.profiles AS
SELECT project, distinct_id, property,
    s.1 AS value, s.2 AS value_json, s.3 AS value_type, s.4 AS set_at, s.6 AS version
FROM (
    SELECT project, distinct_id, property,
        argMax(tuple(value, value_json, value_type, set_at, deleted, version), version) AS s
    FROM veil.profile_state
    GROUP BY project, distinct_id, property
)
WHERE s.5 = 0;
-- groups
CREATE TABLE IF NOT EXISTS veil.group_ops (
    project         LowCardinality(String),
    group_key       LowCardinality(String),
    group_id        String,
    time            DateTime,
    time_ms         UInt16,
    op              LowCardinality(String),
    operand         String CODEC(ZSTD(1)),
    modifiers       String CODEC(ZSTD(1)),
    insert_id       String,
    received_at     DateTime CODEC(Delta, ZSTD(1)),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, group_key, group_id, time, insert_id, op)
SETTINGS non_replicated_deduplication_window = 1000;
CREATE TABLE IF NOT EXISTS veil.group_state (
    project         LowCardinality(String),
    group_key       LowCardinality(String),
    group_id        String,
    property        String,
    value           String CODEC(ZSTD(1)),
    value_json      String CODEC(ZSTD(1)),
    value_type      LowCardinality(String),
    deleted         UInt8,
    set_at          DateTime,
    version         UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    updated_at      DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (project, group_key, group_id, property);
CREATE VIEW IF NOT EXISTS veil.groups AS
SELECT project, group_key, group_id, property,
    s.1 AS value, s.2 AS value_json, s.3 AS value_type, s.4 AS set_at, s.6 AS version
FROM (
    SELECT project, group_key, group_id, property,
        argMax(tuple(value, value_json, value_type, set_at, deleted, version), version) AS s
    FROM veil.group_state
    GROUP BY project, group_key, group_id, property
)
WHERE s.5 = 0;
-- analyst role
CREATE ROLE IF NOT EXISTS veil_analyst;
GRANT SELECT ON veil.* TO veil_analyst;
