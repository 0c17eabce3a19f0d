/*-------------------------------------------------------------------------
 *
 * promote.h
 *		  Failover: promote() turns a register's replica into the primary copy.
 *
 * IDENTIFICATION
 *		  src/embassy/promote.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef DE_PROMOTE_H
#define DE_PROMOTE_H

/* data_embassy.promote_sequence_margin */
extern int	de_promote_sequence_margin;

/* data_embassy.test_promote_delay (ms; for crash tests only) */
extern int	de_test_promote_delay_ms;

#endif							/* DE_PROMOTE_H */
