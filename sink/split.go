package sink

// shardParts splits b by shard for a cluster of n shards: track events and
// profile operations by the pseudonymous distinct_id, group operations by
// group_id (ShardOf). Each part keeps b's rows in b's order, so every
// attempt at a flush sends each shard the same block. The parts share b's
// strings and its Kafka ranges (the deduplication token); they are made
// once per batch and dropped by Reset.
func (b *Batch) shardParts(n int) []*Batch {
	if b.parts != nil {
		return b.parts
	}
	parts := make([]*Batch, n)
	for i := range parts {
		parts[i] = &Batch{groups: opRows{groups: true}, topic: b.topic, ranges: b.ranges}
	}
	e := &b.events
	for i, id := range e.distinctID {
		p := parts[ShardOf(id, n)]
		r := &p.events
		r.project = append(r.project, e.project[i])
		r.time = append(r.time, e.time[i])
		r.timeMs = append(r.timeMs, e.timeMs[i])
		r.event = append(r.event, e.event[i])
		r.distinctID = append(r.distinctID, id)
		r.insertID = append(r.insertID, e.insertID[i])
		r.receivedAt = append(r.receivedAt, e.receivedAt[i])
		r.country = append(r.country, e.country[i])
		r.region = append(r.region, e.region[i])
		r.city = append(r.city, e.city[i])
		r.browser = append(r.browser, e.browser[i])
		r.browserVersion = append(r.browserVersion, e.browserVersion[i])
		r.os = append(r.os, e.os[i])
		r.device = append(r.device, e.device[i])
		r.lib = append(r.lib, e.lib[i])
		r.libVer = append(r.libVer, e.libVer[i])
		r.properties = append(r.properties, e.properties[i])
		r.policyVersion = append(r.policyVersion, e.policyVersion[i])
		r.keyEpoch = append(r.keyEpoch, e.keyEpoch[i])
		r.consent = append(r.consent, e.consent[i])
		r.transforms = append(r.transforms, e.transforms[i])
		p.rows++
	}
	for _, src := range []*opRows{&b.people, &b.groups} {
		for i := range src.project {
			id := src.distinctID[i]
			if src.groups {
				id = src.group[i]
			}
			p := parts[ShardOf(id, n)]
			r := &p.people
			if src.groups {
				r = &p.groups
			}
			r.project = append(r.project, src.project[i])
			r.distinctID = append(r.distinctID, src.distinctID[i])
			r.groupKey = append(r.groupKey, src.groupKey[i])
			r.group = append(r.group, src.group[i])
			r.time = append(r.time, src.time[i])
			r.timeMs = append(r.timeMs, src.timeMs[i])
			r.op = append(r.op, src.op[i])
			r.operand = append(r.operand, src.operand[i])
			r.modifiers = append(r.modifiers, src.modifiers[i])
			r.insertID = append(r.insertID, src.insertID[i])
			r.receivedAt = append(r.receivedAt, src.receivedAt[i])
			r.partition = append(r.partition, src.partition[i])
			r.offset = append(r.offset, src.offset[i])
			r.policyVersion = append(r.policyVersion, src.policyVersion[i])
			r.keyEpoch = append(r.keyEpoch, src.keyEpoch[i])
			r.consent = append(r.consent, src.consent[i])
			r.transforms = append(r.transforms, src.transforms[i])
			p.rows++
		}
		for e, t := range src.touched {
			p := parts[ShardOf(e.id, n)]
			r := &p.people
			if src.groups {
				r = &p.groups
			}
			if r.touched == nil {
				r.touched = map[entity]*touch{}
			}
			r.touched[e] = t
		}
	}
	b.parts = parts
	return parts
}
