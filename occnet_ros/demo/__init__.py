"""The ``make demo`` pipeline: run the simulated camera and the reconstruction node (:mod:`.runner`),
score and report (:mod:`.report`), draw (:mod:`.pictures`). Only :mod:`.runner` imports rclpy."""
