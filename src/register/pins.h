/*-------------------------------------------------------------------------
 *
 * pins.h
 *		  Embassies pinned at a register (table data_embassy.embassy_pins).
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_PINS_H
#define DE_PINS_H

#include "seal/crypto.h"

/*
 * Is this embassy key pinned in the current database?  Reads the pins
 * table with the current snapshot (caller must be in a transaction) and
 * returns the pin's name in *pin_name (palloc'd) when pin_name is not NULL.
 * Raises ERROR when the extension is not installed in this database.
 */
extern bool de_pin_find(const uint8 *embassy_pub, char **pin_name);

#endif							/* DE_PINS_H */
