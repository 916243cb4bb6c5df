/* registry.c - the table of input drivers, written by hand: adding a driver
 * is one declaration and one line here, and `driver =` finds it by name.
 */
#include <string.h>

#include "driver.h"

extern const struct driver tail_driver;
extern const struct driver sysfs_driver;
extern const struct driver modbus_driver;
extern const struct driver system_driver;
extern const struct driver serial_driver;
extern const struct driver spool_driver;
extern const struct driver exec_driver;
extern const struct driver udp_driver;
extern const struct driver unix_driver;
extern const struct driver mqtt_sub_driver;

const struct driver *const driver_registry[] = {
	&tail_driver,
	&sysfs_driver,
	&modbus_driver,
	&system_driver,
	&serial_driver,
	&spool_driver,
	&exec_driver,
	&udp_driver,
	&unix_driver,
	&mqtt_sub_driver,
	NULL,
};

const struct driver *driver_find(const char *name)
{
	for (size_t i = 0; driver_registry[i]; i++)
		if (!strcmp(driver_registry[i]->name, name))
			return driver_registry[i];
	return NULL;
}
