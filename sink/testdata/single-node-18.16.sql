-- events
CREATE TABLE IF NOT EXISTS veil.events (
    project         String,
    time            DateTime,
    time_ms         UInt16,
    event           String,
    distinct_id     String,
    insert_id       String,
    received_at     DateTime,
    country_code    String,
    region          String,
    city            String,
    browser         String,
    browser_version String,
    os              String,
    device          String,
    lib             String,
    lib_version     String,
    properties      String,
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, toDate(time), event, distinct_id, time, insert_id);
-- events_dedup view
CREATE VIEW IF NOT EXISTS veil.events_dedup AS SELECT * FROM veil.events FINAL;
-- profiles
CREATE TABLE IF NOT EXISTS veil.profile_ops (
    project         String,
    distinct_id     String,
    time            DateTime,
    time_ms         UInt16,
    op              String,
    operand         String,
    modifiers       String,
    insert_id       String,
    received_at     DateTime,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, distinct_id, time, insert_id, op);
CREATE TABLE IF NOT EXISTS veil.profile_state (
    project         String,
    distinct_id     String,
    property        String,
    value           String,
    value_json      String,
    value_type      String,
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
    project         String,
    group_key       String,
    group_id        String,
    time            DateTime,
    time_ms         UInt16,
    op              String,
    operand         String,
    modifiers       String,
    insert_id       String,
    received_at     DateTime,
    kafka_partition UInt32,
    kafka_offset    UInt64,
    policy_version  UInt32,
    key_epoch       UInt32,
    consent         Array(String),
    transforms      Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(time)
ORDER BY (project, group_key, group_id, time, insert_id, op);
CREATE TABLE IF NOT EXISTS veil.group_state (
    project         String,
    group_key       String,
    group_id        String,
    property        String,
    value           String,
    value_json      String,
    value_type      String,
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
