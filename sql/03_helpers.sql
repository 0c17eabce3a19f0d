--
-- 03_helpers: functions the plugin tests (10 to 12) share; run this file
-- before any of them.
--

-- frames decoded from a slot since the last call, in order, sealed to this
-- instance's own key (pinned as 'self' by 02_pins)
CREATE FUNCTION de_frames(slot name, VARIADIC opts text[] DEFAULT '{}')
RETURNS bytea[] LANGUAGE sql AS $$
	SELECT coalesce(array_agg(c.data ORDER BY c.n), '{}')
	FROM pg_logical_slot_get_binary_changes(slot, NULL, NULL,
			VARIADIC ARRAY['embassy_key', data_embassy.public_key()] || opts)
		WITH ORDINALITY AS c(lsn, xid, data, n)
$$;

-- their records, without the LSNs, xids and times that vary between runs
CREATE FUNCTION de_records(frames bytea[])
RETURNS TABLE (rec text, relation text, detail jsonb) LANGUAGE sql AS $$
	SELECT record_type, relation,
		   CASE WHEN record_type IN ('BEGIN', 'COMMIT') THEN NULL ELSE detail END
	FROM data_embassy.inspect_frames(frames, data_embassy.public_key())
	ORDER BY frame_seq, record_no
$$;
