-- 100,000 people with an address and one or two documents each.
INSERT INTO person (personal_code, first_name, last_name, born, died)
SELECT (3 + g % 2)::text || lpad(g::text, 10, '0'),
	   (ARRAY['Mari', 'Jaan', 'Kati', 'Peeter', 'Liis', 'Andres', 'Tiina', 'Mihkel'])[1 + g % 8],
	   (ARRAY['Tamm', 'Saar', 'Sepp', 'Mägi', 'Kask', 'Kukk', 'Rebane', 'Ilves', 'Pärn'])[1 + g % 9],
	   '1930-01-01'::date + (g * 7919) % 33000,
	   CASE WHEN g % 37 = 0 THEN '2020-01-01'::date + g % 1500 END
FROM generate_series(1, 100000) g;

INSERT INTO address (person_id, county, city, street, postal_code, valid_from)
SELECT g,
	   (ARRAY['Harju', 'Tartu', 'Ida-Viru', 'Pärnu', 'Lääne-Viru'])[1 + g % 5],
	   (ARRAY['Tallinn', 'Tartu', 'Narva', 'Pärnu', 'Rakvere'])[1 + g % 5],
	   (ARRAY['Pikk', 'Lai', 'Vabaduse', 'Rüütli', 'Kooli'])[1 + g % 5] || ' ' || (1 + g % 120),
	   (10000 + g % 90000)::text,
	   '2000-01-01'::date + g % 9000
FROM generate_series(1, 100000) g;

INSERT INTO document (person_id, kind, number, issued, expires)
SELECT 1 + (g - 1) % 100000,
	   CASE WHEN g <= 100000 THEN 'id-card' ELSE 'passport' END,
	   CASE WHEN g <= 100000 THEN 'A' ELSE 'K' END || lpad(g::text, 8, '0'),
	   '2018-01-01'::date + g % 2500,
	   '2018-01-01'::date + g % 2500 + 1826
FROM generate_series(1, 150000) g;
