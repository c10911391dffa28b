"""SupportSim: a customer-support desk over a generated database, with a simulated customer."""
